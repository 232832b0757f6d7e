"""The SigLIP2 text tower in Flax linen (frozen in AToken; paper §3.1, Fig. 2).

ids [N, L] (L <= max_len = 64) -> token embedding + learned absolute position embedding ->
`depth` pre-LN blocks (LayerNorm with bias, GELU-tanh MLP, full bidirectional attention, no
RoPE) -> final LayerNorm -> the hidden state at the LAST position -> head Linear(D -> P).

SigLIP2 was trained on ids padded to 64 with no attention mask: a caption is lower-cased,
tokenised, gets an EOS, is padded with the pad id (0) and, when too long, cut so that the EOS
stays last ("sticky" EOS). Padding tokens attend and are attended to, and the pooled token is
position 63, whether it is padding or that EOS. Hugging Face's `Siglip2TextModel` does the same
when called without `attention_mask`; given one, it hides padded keys, which `valid` reproduces.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from atoken_jax.model import layers, transformer


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """Shape of a SigLIP text tower.

  Attributes:
    vocab_size: rows of the token table (Gemma: 256000; the byte tokenizer: 258).
    width / depth / num_heads / mlp_dim: the transformer (D, blocks, heads, MLP hidden).
    max_len: rows of the position table; inputs may be shorter (positions 0..L-1).
    projection_size: P, the head's output (= the image embedding's width); None = width.
    norm_eps: every LayerNorm's epsilon.
    dtype / param_dtype: compute and storage dtypes; norms always run in float32.
    scan_layers / remat: as for the AToken trunks (`transformer.BlockStack`).
  """
  vocab_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  max_len: int = 64
  projection_size: int | None = None
  norm_eps: float = 1e-6
  dtype: str = "float32"
  param_dtype: str = "float32"
  scan_layers: bool = False
  remat: str = "none"

  def __post_init__(self):
    if self.width % self.num_heads:
      raise ValueError(f"text: width {self.width} is not divisible by num_heads "
                       f"{self.num_heads}")
    if self.projection_size is None:
      object.__setattr__(self, "projection_size", self.width)

  def replace(self, **kw) -> "TextConfig":
    return dataclasses.replace(self, **kw)


TEXT_PRESETS = {
    # CPU tests and the bundled run: byte-level vocabulary (256 bytes + pad + EOS), width of
    # the `tiny` AToken encoder so image and text embeddings can be compared.
    "tiny": dict(vocab_size=258, width=64, depth=2, num_heads=4, mlp_dim=128),
    # SigLIP2 So400m/16's text tower (Gemma vocabulary).
    "so400m": dict(vocab_size=256_000, width=1152, depth=27, num_heads=16, mlp_dim=4304),
}


def text_config(preset: str = "so400m", **overrides) -> TextConfig:
  """The named preset with `overrides` applied (e.g. scan_layers=True)."""
  if preset not in TEXT_PRESETS:
    raise ValueError(f"unknown text preset {preset!r}; choose from {sorted(TEXT_PRESETS)}")
  return TextConfig(**{**TEXT_PRESETS[preset], **overrides})


def key_mask(q: dict, k: dict) -> jax.Array:
  """[N, Lq], [N, Lk] -> [N, Lq, Lk]: every query sees every valid key."""
  return jnp.broadcast_to(k["valid"][:, None, :], q["valid"].shape + k["valid"].shape[-1:])


class TextEncoder(nn.Module):
  """SigLIP2 text tower. Parameter tree (unscanned): token_embedding [V, D],
  position_embedding [max_len, D], transformer/blocks_{i}, final_layer_norm,
  head {kernel [D, P], bias [P]}."""
  cfg: TextConfig

  @nn.compact
  def __call__(self, ids: jax.Array, valid: jax.Array | None = None) -> dict[str, jax.Array]:
    """ids [N, L] int (L <= max_len); valid [N, L] bool: keys that may be attended to (None =
    all, as SigLIP2 was trained). -> hidden [N, L, D] after the final LayerNorm, pooled [N, P]
    (not normalised)."""
    cfg = self.cfg
    n, length = ids.shape
    if length > cfg.max_len:
      raise ValueError(f"text length {length} exceeds max_len {cfg.max_len}")
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    table = self.param("token_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("vocab", "embed")), (cfg.vocab_size, cfg.width), pdtype)
    pos = self.param("position_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("pos", "embed")), (cfg.max_len, cfg.width), pdtype)
    x = jnp.take(table, ids, axis=0).astype(dtype) + pos[:length].astype(dtype)
    if valid is None:
      valid = jnp.ones((n, length), bool)
    block = dict(num_heads=cfg.num_heads, mlp_dim=cfg.mlp_dim, rms_norm=False, use_bias=True,
                 qk_norm=False, mask_fn=key_mask, eps=cfg.norm_eps, dtype=dtype,
                 param_dtype=pdtype)
    x = transformer.BlockStack(cfg.depth, block, scan=cfg.scan_layers, remat=cfg.remat,
                               name="transformer")(x, None, {"valid": valid.astype(bool)})
    x = layers.LayerNorm(cfg.norm_eps, param_dtype=pdtype, name="final_layer_norm")(x)
    pooled = layers.dense(cfg.projection_size, ("embed", None), use_bias=True, dtype=dtype,
                          param_dtype=pdtype, name="head")(x[:, -1])
    return dict(hidden=x, pooled=pooled)


def init_params(cfg: TextConfig, rng: jax.Array, length: int | None = None) -> dict:
  """Random parameters (unboxed) for `cfg`."""
  ids = jnp.zeros((1, length or cfg.max_len), jnp.int32)
  return nn.unbox(jax.jit(TextEncoder(cfg).init)(rng, ids))["params"]


def encode_texts(cfg: TextConfig, params: Any, ids: jax.Array,
                 valid: jax.Array | None = None) -> jax.Array:
  """ids [N, L] -> pooled text embeddings [N, P] (float32, not normalised)."""
  out = TextEncoder(cfg).apply({"params": params}, ids, valid)
  return out["pooled"].astype(jnp.float32)
