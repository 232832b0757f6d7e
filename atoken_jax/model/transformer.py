"""Pre-norm transformer blocks and a stack of them, with optional `nn.scan` and remat."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from atoken_jax.model import attention, layers

_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
ACTIVATION_AXES = ("batch", "length", "act_embed")


class Block(nn.Module):
  """x + attn(norm1(x)); x + mlp(norm2(x)). Returns (x, None) so it can be scanned."""
  num_heads: int
  mlp_dim: int
  rms_norm: bool
  use_bias: bool
  qk_norm: bool
  mask_fn: attention.MaskFn
  eps: float = 1e-6
  softcap: float | None = None
  attention_impl: str = "auto"
  dtype: Any = None
  param_dtype: Any = None

  @nn.compact
  def __call__(self, x, angles, info):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = layers.norm_layer(self.rms_norm, self.eps, self.param_dtype, "norm1")(x)
    x = x + attention.SelfAttention(
        num_heads=self.num_heads, use_bias=self.use_bias, qk_norm=self.qk_norm,
        softcap=self.softcap, impl=self.attention_impl, name="attn", **kw)(
            h, angles, info, self.mask_fn)
    h = layers.norm_layer(self.rms_norm, self.eps, self.param_dtype, "norm2")(x)
    x = x + layers.Mlp(self.mlp_dim, use_bias=self.use_bias, name="mlp", **kw)(h)
    return nn.with_logical_constraint(x, ACTIVATION_AXES), None


class BlockStack(nn.Module):
  """`depth` Blocks. With `scan`, parameters are stacked on a leading 'layers' axis under
  `blocks/`; otherwise they live under `blocks_0`, `blocks_1`, ..."""
  depth: int
  block: dict  # Block attributes
  scan: bool = False
  remat: str = "none"

  @nn.compact
  def __call__(self, x, angles, info):
    cls = Block
    if self.remat != "none":
      cls = nn.remat(Block, policy=_REMAT_POLICIES[self.remat], prevent_cse=not self.scan)
    x = nn.with_logical_constraint(x, ACTIVATION_AXES)
    if self.scan:
      stack = nn.scan(cls, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(nn.broadcast, nn.broadcast), length=self.depth,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(name="blocks", **self.block)(x, angles, info)
    else:
      for i in range(self.depth):
        x, _ = cls(name=f"blocks_{i}", **self.block)(x, angles, info)
    return x
