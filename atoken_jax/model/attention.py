"""Self-attention confined to token groups (per sample, per temporal tile, per 3D window).

Which keys a query may see is decided by a `mask_fn(q_info, k_info) -> [B, Lq, Lk] bool` over
per-token integer metadata (pytrees of [B, L] arrays), so the same kernel serves the packed
tokenizer rows (segment ids, optional decoder KV cache across tiles) and the Gaussian decoder's
windows. Padding tokens carry group 0 and attend only to padding, so no row is ever empty.

Implementations (`attend(impl=...)`, the model's `attention_impl`; docs/attention.md):
  * dense: materialises [B, H, Lq, Lk] scores;
  * block_sparse: with a host block table in `info` (`atoken_jax.attention_blocks`), visits only
    the (query block, key block) pairs that share a group (`block_sparse.py`); without one, walks
    every key in chunks with an online softmax (O(Lq * chunk) memory), or runs dense when the row
    is no longer than one chunk;
  * splash: Pallas TPU splash attention with each row's mask as a dynamic mask (`splash.py`):
    empty blocks skipped; Pallas interpret mode off TPU;
  * auto: splash on TPU, block_sparse elsewhere (docs/attention.md says why, per platform).
Every implementation equals dense at each query that sees a key; block_sparse returns 0 at
padding queries outside every group (nothing reads them).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from atoken_jax import attention_blocks
from atoken_jax import config as config_lib
from atoken_jax.model import block_sparse, layers, rope, splash

MaskFn = Callable[[Any, Any], jax.Array]
_NEG = -1e30
IMPLS = config_lib.ATTENTION_IMPLS
FALLBACK_CHUNK = 1024  # key chunk of block_sparse when the batch carries no block table


def same_group(q_groups: jax.Array, k_groups: jax.Array) -> jax.Array:
  """[B, Lq], [B, Lk] group ids -> [B, Lq, Lk]: attend within the same group."""
  return q_groups[:, :, None] == k_groups[:, None, :]


def _scores(q, k, scale, softcap):
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  if softcap:
    s = softcap * jnp.tanh(s / softcap)
  return s


def dense_attention(q, k, v, mask, softcap=None):
  """q [B,Lq,H,D], k/v [B,Lk,H,D], mask [B,Lq,Lk] -> [B,Lq,H,D]."""
  s = _scores(q, k, q.shape[-1] ** -0.5, softcap)
  s = jnp.where(mask[:, None], s, _NEG)
  p = jax.nn.softmax(s, axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v,
                    preferred_element_type=jnp.float32).astype(q.dtype)


def chunked_attention(q, k, v, q_info, k_info, mask_fn: MaskFn, chunk: int, softcap=None):
  """The same result as `dense_attention`, walking keys in chunks with an online softmax."""
  b, lk, h, d = k.shape
  pad = (-lk) % chunk
  valid = jnp.ones((b, lk), bool)
  if pad:
    padk = lambda a: jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
    k, v, valid = padk(k), padk(v), padk(valid)
    k_info = jax.tree.map(padk, k_info)
  n = (lk + pad) // chunk
  to_chunks = lambda a: jnp.moveaxis(a.reshape(b, n, chunk, *a.shape[2:]), 1, 0)
  xs = (to_chunks(k), to_chunks(v), to_chunks(valid), jax.tree.map(to_chunks, k_info))
  scale = d ** -0.5
  lq = q.shape[1]

  def step(carry, x):
    m, l, acc = carry
    kc, vc, validc, infoc = x
    mask = mask_fn(q_info, infoc) & validc[:, None, :]
    s = jnp.where(mask[:, None], _scores(q, kc, scale, softcap), _NEG)  # [B,H,Lq,c]
    m_new = jnp.maximum(m, s.max(-1))
    corr = jnp.exp(m - m_new)
    p = jnp.exp(s - m_new[..., None])
    l = l * corr + p.sum(-1)
    acc = acc * corr[..., None] + jnp.einsum("bhqk,bkhd->bhqd", p, vc.astype(jnp.float32))
    return (m_new, l, acc), None

  init = (jnp.full((b, h, lq), _NEG, jnp.float32), jnp.zeros((b, h, lq), jnp.float32),
          jnp.zeros((b, h, lq, d), jnp.float32))
  # Recompute each chunk's scores in the backward pass instead of keeping all of them, so the
  # gradient also needs only O(Lq * chunk) memory per block.
  (_, l, acc), _ = jax.lax.scan(jax.checkpoint(step), init, xs)
  return jnp.moveaxis(acc / l[..., None], 1, 2).astype(q.dtype)


def resolve_impl(impl: str, platform: str | None = None) -> str:
  """`auto` -> the backend for `platform` (default: jax's): splash on TPU, else block_sparse."""
  if impl not in IMPLS:
    raise ValueError(f"attention_impl must be one of {IMPLS}, got {impl!r}")
  if impl != "auto":
    return impl
  return "splash" if (platform or jax.default_backend()) == "tpu" else "block_sparse"


def split_table(info: dict) -> tuple[dict, dict | None]:
  """Token metadata -> (per-token arrays, the block table or None)."""
  if not isinstance(info, dict) or attention_blocks.TABLE_KEYS[0] not in info:
    return info, None
  tokens = {k: v for k, v in info.items() if k not in attention_blocks.TABLE_KEYS}
  return tokens, {k: info[k] for k in attention_blocks.TABLE_KEYS}


def attend(q, k, v, q_info, k_info, mask_fn: MaskFn, *, impl: str = "auto", softcap=None,
           table: dict | None = None):
  """q [B, Lq, H, D], k/v [B, Lk, H, D] -> [B, Lq, H, D]; `table` only for self-attention."""
  impl = resolve_impl(impl)
  if impl == "splash":
    return splash.splash_attention(q, k, v, q_info, k_info, mask_fn, softcap)
  if impl == "block_sparse" and table is not None:
    return block_sparse.block_sparse_attention(
        q, k, v, q_info, k_info, mask_fn, table["attn_pairs"],
        table["attn_kv_counts"].shape[1], softcap)
  if impl == "block_sparse" and k.shape[1] > FALLBACK_CHUNK:
    return chunked_attention(q, k, v, q_info, k_info, mask_fn, FALLBACK_CHUNK, softcap)
  return dense_attention(q, k, v, mask_fn(q_info, k_info), softcap)


class MultiHeadRMSNorm(nn.Module):
  """Per-head qk-norm: L2-normalise over D, times gamma[H, D] and sqrt(D), in float32."""
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h, d = x.shape[-2:]
    gamma = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                             ("heads", "kv")),
                       (h, d), self.param_dtype)
    y = x.astype(jnp.float32)
    # x / max(|x|, 1e-12), written so that an all-zero vector (a padding token) has a finite
    # gradient: sqrt'(0) is infinite, and inf * 0 would poison every parameter's gradient.
    inv = jax.lax.rsqrt(jnp.maximum(jnp.square(y).sum(-1, keepdims=True), 1e-24))
    y = y * inv * gamma * (d ** 0.5)
    return y.astype(x.dtype)


class SelfAttention(nn.Module):
  """qkv projection [C -> 3, H, D] (q, k, v each head-major), optional qk-norm, RoPE, out proj.

  Attributes:
    rope: rotate q and k by `angles` (4D RoPE); qk_norm: decoder-style per-head RMS norm applied
      before RoPE; softcap: tanh soft-capping of the scores (Gaussian decoder: 30).
  """
  num_heads: int
  use_bias: bool = True
  qk_norm: bool = False
  softcap: float | None = None
  impl: str = "auto"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, angles, info, mask_fn: MaskFn):
    """x [B, L, C]; angles [B, L, D/2] or None; info: per-token metadata for mask_fn, plus
    optionally the block table (`attention_blocks.TABLE_KEYS`)."""
    c = x.shape[-1]
    d = c // self.num_heads
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
    qkv = layers.dense((3, self.num_heads, d), ("embed", "qkv", "heads", "kv"), name="qkv",
                       **kw)(x)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if self.qk_norm:
      q = MultiHeadRMSNorm(self.param_dtype, name="q_norm")(q)
      k = MultiHeadRMSNorm(self.param_dtype, name="k_norm")(k)
    if angles is not None:
      q, k = rope.apply_rope(q, angles), rope.apply_rope(k, angles)
    tokens, table = split_table(info)
    o = attend(q, k, v, tokens, tokens, mask_fn, impl=self.impl, softcap=self.softcap,
               table=table)
    return layers.dense(c, ("heads", "kv", "embed"), in_axis=(-2, -1), name="out", **kw)(o)
