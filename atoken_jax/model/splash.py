"""TPU attention: Pallas splash attention with a per-row dynamic mask (skips empty blocks).

Splash attention's block sparsity comes from its MaskInfo (which key block each query block
visits; 0 = skip). With a static mask it is computed once on the host; our masks depend on the
packed batch, so each row's [L, L] mask (`mask_fn`) is handed to splash's dynamic-mask path,
which derives the MaskInfo on device: fully masked (query block, key block) pairs are never
computed, partial ones are masked inside the kernel. Segment ids alone would not do: splash
only masks with them, inside every block it visits.

`SplashAttentionKernel.__call__` in jax 0.10.2 branches on `is_dynamic_mask` after it became an
array, which fails under `jit`; the kernel entry (`_splash_attention`) is called directly with
the MaskInfo as produced. Off TPU the kernel runs in Pallas interpret mode (tests, CPU).
Verified here in interpret mode only: no TPU was available when this was written.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel
from jax.experimental.pallas.ops.tpu.splash_attention import (
  splash_attention_mask_info as mask_info,
)

LANES = 128


def _block_sizes(length: int) -> kernel.BlockSizes:
  b = 512 if length % 512 == 0 else LANES
  return kernel.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b,
                           block_kv_dkv=b, block_kv_dkv_compute=b, block_q_dq=b, block_kv_dq=b)


def splash_attention(q, k, v, q_info, k_info, mask_fn, softcap=None):
  """q, k, v [B, L, H, D]; mask_fn(q_info, k_info) -> [B, L, L] -> [B, L, H, D].

  Rows are padded to a multiple of 128: padded tokens see only each other (no empty softmax
  row), real ones never see them; padded queries are dropped.
  """
  b, length, h, d = q.shape
  mask = mask_fn(q_info, k_info)
  pad = (-length) % LANES
  if pad:
    grow = lambda a: jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
    q, k, v = grow(q), grow(k), grow(v)
    extra = jnp.arange(length + pad) >= length
    mask = jnp.pad(mask, [(0, 0), (0, pad), (0, pad)]) | (extra[:, None] & extra[None, :])
  row = functools.partial(_row, sizes=_block_sizes(length + pad), softcap=softcap,
                          interpret=jax.default_backend() != "tpu")
  out = jax.vmap(row)(q * jnp.asarray(d ** -0.5, q.dtype), k, v, mask)
  return out[:, :length]


def _row(q, k, v, mask, *, sizes: kernel.BlockSizes, softcap, interpret: bool):
  """One row: q, k, v [L, H, D], mask [L, L] -> [L, H, D]."""
  m = mask[None]  # one mask for every head
  fwd, _ = mask_info.process_dynamic_mask(m, (sizes.block_q, sizes.block_kv))
  dq, _ = mask_info.process_dynamic_mask(m, (sizes.block_q_dq, sizes.block_kv_dq))
  dkv, _ = mask_info.process_dynamic_mask_dkv(m, (sizes.block_q_dkv, sizes.block_kv_dkv))
  heads_first = lambda a: jnp.swapaxes(a, 0, 1)
  out = kernel._splash_attention(  # pylint: disable=protected-access
      fwd, dq, dkv, heads_first(q), heads_first(k), heads_first(v), None, None,
      block_sizes=sizes, is_mqa=False, save_residuals=False,
      mask_value=kernel.DEFAULT_MASK_VALUE, attn_logits_soft_cap=softcap,
      residual_checkpoint_name=None, mask_function=None, interpret=interpret)
  return heads_first(out)
