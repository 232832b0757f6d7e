"""Block-sparse self-attention: visits only the (query block, key block) pairs of a host table.

Pure JAX, so it runs on every platform. The row is cut into blocks of `block_len` tokens; the
host (`atoken_jax.attention_blocks.block_table`) lists the block pairs that share an attention
group, in chunks of G pairs with distinct query blocks. The forward pass walks the chunks that
hold a live pair with a float32 online softmax (each chunk's G pairs in parallel); the backward
pass is written by hand (FlashAttention-2 style: recompute each pair's scores from q, k and the
saved log-sum-exp), so the gradient needs O(L * D) memory besides one chunk's scores, and
nothing is stored per chunk. Inside a visited pair the mask (`mask_fn`) still applies, so the
result equals dense masked attention at every query that has a key; a query with no visible key
(padding outside every group) returns 0.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_NEG = -1e30


def _block(a: jax.Array, n_blocks: int, block_len: int) -> jax.Array:
  """[B, L, ...] -> [B, n_blocks + 1, block_len, ...]: plus one zero dummy block (the target of
  padding pairs)."""
  a = jnp.pad(a, [(0, 0), (0, block_len)] + [(0, 0)] * (a.ndim - 2))
  return a.reshape(a.shape[0], n_blocks + 1, block_len, *a.shape[2:])


def block_sparse_attention(q, k, v, q_info, k_info, mask_fn, pairs, n_blocks: int,
                           softcap=None):
  """Masked self-attention over the block pairs of `pairs` only.

  Args:
    q, k, v: [B, L, H, D].
    q_info, k_info: pytrees of per-token [B, L, ...] metadata for `mask_fn`.
    mask_fn: (q_info, k_info) -> [N, Lq, Lk] bool, applied to [N, block_len] slices.
    pairs: [B, C, G, 2] int32 (query block, key block), (-1, -1) = padding.
    n_blocks: blocks per row, a divisor of L (block_len = L / n_blocks).
    softcap: tanh soft-capping of the scores.

  Returns:
    [B, L, H, D] in q's dtype.
  """
  b, length, h, d = q.shape
  if length % n_blocks:
    raise ValueError(f"a row of {length} tokens cannot be cut into {n_blocks} equal blocks")
  block_len = length // n_blocks
  blk = functools.partial(_block, n_blocks=n_blocks, block_len=block_len)
  idx = jnp.where(pairs < 0, n_blocks, pairs).astype(jnp.int32)
  n_live = jnp.max(jnp.sum(jnp.any(pairs[..., 0] >= 0, -1), -1)).astype(jnp.int32)
  out = _attend(mask_fn, softcap, blk(q), blk(k), blk(v), jax.tree.map(blk, q_info),
                jax.tree.map(blk, k_info), idx, n_live)
  return out[:, :n_blocks].reshape(b, length, h, d)


def _gather(tree, index):
  return jax.tree.map(lambda a: a[index], tree)


def _pair_scores(qg, kg, scale, softcap):
  """[G, bq, H, D] x [G, bk, H, D] -> scores [G, H, bq, bk] float32 and tanh(s / cap)."""
  s = jnp.einsum("gqhd,gkhd->ghqk", qg, kg, preferred_element_type=jnp.float32) * scale
  if not softcap:
    return s, None
  t = jnp.tanh(s / softcap)
  return softcap * t, t


def _pair_mask(mask_fn, qinfo, kinfo, qi, ki, n_blocks):
  """[G, H=1, bq, bk] bool: the mask of each pair, false for padding pairs."""
  m = mask_fn(_gather(qinfo, qi), _gather(kinfo, ki))
  return (m & (qi < n_blocks)[:, None, None])[:, None]


def _forward(mask_fn, softcap, qb, kb, vb, qinfo, kinfo, idx, n_live):
  b, nb1, bl, h, d = qb.shape
  scale = d ** -0.5

  def row_step(m, l, acc, qb, kb, vb, qinfo, kinfo, pc):
    qi, ki = pc[:, 0], pc[:, 1]
    s, _ = _pair_scores(qb[qi], kb[ki], scale, softcap)
    mask = _pair_mask(mask_fn, qinfo, kinfo, qi, ki, nb1 - 1)
    s = jnp.where(mask, s, _NEG)
    m_old = m[qi]
    m_new = jnp.maximum(m_old, s.max(-1))
    p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
    corr = jnp.exp(m_old - m_new)
    pv = jnp.einsum("ghqk,gkhd->gqhd", p.astype(vb.dtype), vb[ki],
                    preferred_element_type=jnp.float32)
    acc_new = acc[qi] * jnp.swapaxes(corr, 1, 2)[..., None] + pv
    return (m.at[qi].set(m_new), l.at[qi].set(l[qi] * corr + p.sum(-1)),
            acc.at[qi].set(acc_new))

  def body(c, carry):
    pc = jax.lax.dynamic_index_in_dim(idx, c, axis=1, keepdims=False)  # [B, G, 2]
    return jax.vmap(row_step)(*carry, qb, kb, vb, qinfo, kinfo, pc)

  init = (jnp.full((b, nb1, h, bl), _NEG, jnp.float32), jnp.zeros((b, nb1, h, bl), jnp.float32),
          jnp.zeros((b, nb1, bl, h, d), jnp.float32))
  m, l, acc = jax.lax.fori_loop(0, n_live, body, init)
  seen = l > 0
  out = acc / jnp.swapaxes(jnp.where(seen, l, 1.0), 2, 3)[..., None]
  lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), 0.0)
  return out.astype(qb.dtype), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _attend(mask_fn, softcap, qb, kb, vb, qinfo, kinfo, idx, n_live):
  return _forward(mask_fn, softcap, qb, kb, vb, qinfo, kinfo, idx, n_live)[0]


def _attend_fwd(mask_fn, softcap, qb, kb, vb, qinfo, kinfo, idx, n_live):
  out, lse = _forward(mask_fn, softcap, qb, kb, vb, qinfo, kinfo, idx, n_live)
  return out, (qb, kb, vb, qinfo, kinfo, idx, n_live, out, lse)


def _attend_bwd(mask_fn, softcap, res, g):
  qb, kb, vb, qinfo, kinfo, idx, n_live, out, lse = res
  d = qb.shape[-1]
  scale = d ** -0.5
  dt = qb.dtype
  delta = jnp.einsum("bnqhd,bnqhd->bnhq", g.astype(jnp.float32), out.astype(jnp.float32))
  g = g.astype(dt)

  def row_step(dq, dk, dv, qb, kb, vb, qinfo, kinfo, g, lse, delta, pc):
    qi, ki = pc[:, 0], pc[:, 1]
    qg, kg, vg, gg = qb[qi], kb[ki], vb[ki], g[qi]
    s, t = _pair_scores(qg, kg, scale, softcap)
    mask = _pair_mask(mask_fn, qinfo, kinfo, qi, ki, qb.shape[0] - 1)
    p = jnp.where(mask, jnp.exp(s - lse[qi][..., None]), 0.0)  # [G, H, bq, bk]
    dv_g = jnp.einsum("ghqk,gqhd->gkhd", p.astype(dt), gg, preferred_element_type=jnp.float32)
    dp = jnp.einsum("gqhd,gkhd->ghqk", gg, vg, preferred_element_type=jnp.float32)
    ds = p * (dp - delta[qi][..., None])
    if softcap:
      ds = ds * (1.0 - t * t)
    ds = (ds * scale).astype(dt)
    dq_g = jnp.einsum("ghqk,gkhd->gqhd", ds, kg, preferred_element_type=jnp.float32)
    dk_g = jnp.einsum("ghqk,gqhd->gkhd", ds, qg, preferred_element_type=jnp.float32)
    return dq.at[qi].add(dq_g), dk.at[ki].add(dk_g), dv.at[ki].add(dv_g)

  def body(c, carry):
    pc = jax.lax.dynamic_index_in_dim(idx, c, axis=1, keepdims=False)
    return jax.vmap(row_step)(*carry, qb, kb, vb, qinfo, kinfo, g, lse, delta, pc)

  zeros = jnp.zeros(qb.shape, jnp.float32)
  dq, dk, dv = jax.lax.fori_loop(0, n_live, body, (zeros, zeros, zeros))
  return dq.astype(dt), dk.astype(kb.dtype), dv.astype(vb.dtype), None, None, None, None


_attend.defvjp(_attend_fwd, _attend_bwd)
