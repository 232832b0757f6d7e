"""The TRELLIS-style 3D Gaussian decoder network (spec §2.9), Flax linen.

voxel features [B, N, 768] (the AToken reconstruction's first 768 channels, in [-1, 1]) and
integer voxel coords [B, N, 3] (x, y, z in the 64^3 grid) -> raw Gaussian parameters [B, N, 448]:

  input_layer (no bias) -> + sinusoidal xyz embedding ('ape') -> depth x Block (RMSNorm
  pre-norm, no biases, no RoPE, no qk-norm; attention inside 8^3 windows shifted by 4 on odd
  blocks, scores soft-capped at 30) -> LayerNorm (no affine, eps 1e-5) -> out_layer (bias).

Windows: block i groups voxels by floor((coord + s_i) / window) per axis, s_i = window/2 * (i % 2),
with no cyclic wrap; batch rows (and segments, if given) never share a window; padding voxels
form their own group. The release soft-caps through flash-attn's varlen kernel, except when
*every* window holds exactly `window` (=8) tokens, where its fixed-length path runs without a
softcap. That corner case is not reproduced: the softcap is always applied here.

Two exact ways to run the windowed attention:
  * masked (default): each row attends over all its tokens with a same-window mask (`attend`'s
    `attention_impl`: dense, or keys in chunks for long rows); O(N^2) work, fine for small N;
  * packed (`layout=window_layout(...)`, computed on the host): each block's windows are packed
    whole into bins of `capacity` (>= window^3) tokens and attention runs inside bins;
    O(N * capacity) work, for real assets (N ~ 10^4). A bin is one attention block: pairs of
    windows in different bins are never computed.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from atoken_jax import config as config_lib
from atoken_jax.model import attention, gaussians, layers, transformer

PARITIES = ("even", "odd")


def ape(coords: jax.Array, width: int) -> jax.Array:
  """coords [..., 3] -> [..., width] float32: per axis [sin(p f), cos(p f)] with
  f_k = 10000^(-k/fd), fd = width // 3 // 2; axes concatenated x, y, z; zero-padded to width."""
  fd = width // 3 // 2
  freqs = 1.0 / (10000.0 ** (jnp.arange(fd, dtype=jnp.float32) / fd))
  ang = coords.astype(jnp.float32)[..., None] * freqs  # [..., 3, fd]
  emb = jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], -1).reshape(*coords.shape[:-1], 6 * fd)
  return jnp.pad(emb, [(0, 0)] * (emb.ndim - 1) + [(0, width - 6 * fd)])


def windows_per_axis(cfg: config_lib.GaussianDecoderConfig) -> int:
  """Windows along one axis, shifted or not: (resolution - 1 + window/2) // window + 1."""
  return (cfg.resolution - 1 + cfg.window // 2) // cfg.window + 1


def window_ids(coords, valid, cfg: config_lib.GaussianDecoderConfig, shift: int,
               segment_ids=None):
  """coords [..., N, 3] int, valid [..., N] -> window group ids [..., N] int32 (numpy or jax).

  id = segment * K^3 + linear(floor((coord + shift) / window)) + 1 with K windows per axis;
  padding (valid False) -> 0.
  """
  xp = np if isinstance(coords, np.ndarray) else jnp
  k = windows_per_axis(cfg)
  w = (coords.astype(xp.int32) + shift) // cfg.window
  local = (w[..., 0] * k + w[..., 1]) * k + w[..., 2]
  if segment_ids is not None:
    local = local + segment_ids.astype(xp.int32) * k ** 3
  return xp.where(valid, local + 1, 0).astype(xp.int32)


def block_shift(cfg: config_lib.GaussianDecoderConfig, i: int) -> int:
  return cfg.window // 2 * (i % 2)


def _mask_even(q, k):
  return attention.same_group(q["window_even"], k["window_even"])


def _mask_odd(q, k):
  return attention.same_group(q["window_odd"], k["window_odd"])


_MASKS = dict(even=_mask_even, odd=_mask_odd)


def window_layout(coords: np.ndarray, valid: np.ndarray, cfg: config_lib.GaussianDecoderConfig,
                  capacity: int | None = None,
                  segment_ids: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
  """Host-side packing of each parity's windows into bins (for `GaussianDecoderNet(layout=)`).

  coords [B, N, 3], valid [B, N]. Windows are packed whole, in id order, next-fit into
  R = 2 * (B * N) // capacity + 2 bins of `capacity` slots (a bound that depends only on the
  shapes, so one compile serves every input of a shape). Returns, per parity ('even', 'odd'):
    index [R, capacity] int32: flat token index b * N + n of each slot (B * N = empty slot);
    window [R, capacity] int32: the slot's window id (0 = empty slot);
    inverse [B * N] int32: each token's slot r * capacity + c (0 for padding tokens).
  """
  coords, valid = np.asarray(coords), np.asarray(valid, bool)
  b, n = valid.shape
  capacity = capacity or cfg.window ** 3
  rows = 2 * (b * n) // capacity + 2
  out = {}
  for i, parity in enumerate(PARITIES):
    ids = window_ids(coords, valid, cfg, block_shift(cfg, i), segment_ids).astype(np.int64)
    span = int(ids.max()) + 1 if ids.size else 1
    ids = np.where(valid, ids + np.arange(b)[:, None] * span, 0).reshape(-1)  # + batch row
    if ids.size and ids.max() >= 2 ** 31:
      raise ValueError("too many window ids for int32; use fewer segments per row")
    tokens = np.flatnonzero(ids)
    tokens = tokens[np.argsort(ids[tokens], kind="stable")]
    _, starts, counts = np.unique(ids[tokens], return_index=True, return_counts=True)
    if counts.size and counts.max() > capacity:
      raise ValueError(f"a window holds {counts.max()} voxels, more than the bin capacity "
                       f"{capacity} (duplicate coordinates?)")
    index = np.full((rows, capacity), b * n, np.int32)
    window = np.zeros((rows, capacity), np.int32)
    inverse = np.zeros((b * n,), np.int32)
    r, fill = 0, 0
    for s, c in zip(starts, counts):
      if fill + c > capacity:
        r, fill = r + 1, 0
      t = tokens[s:s + c]
      index[r, fill:fill + c] = t
      window[r, fill:fill + c] = ids[t]
      inverse[t] = r * capacity + np.arange(fill, fill + c)
      fill += c
    assert r < rows, (r, rows)
    out[parity] = dict(index=index, window=window, inverse=inverse)
  return out


class GaussianDecoderNet(nn.Module):
  """voxel features [B, N, in_dim], coords [B, N, 3], valid [B, N] -> raw [B, N, 14 G].

  Parameters: input_layer, blocks_{i} (`transformer.Block`), out_layer (`init_variables`
  zeroes it, as the release's training code does); the non-trainable
  `constants/offset_perturbation` [G, 3] (the release's buffer) rides along for `decode`.

  Attributes:
    attention_impl: `attention.attend`'s implementation ("auto", "dense", "block_sparse").
    remat: rematerialise each block in the backward pass.
  """
  cfg: config_lib.GaussianDecoderConfig
  attention_impl: str = "auto"
  remat: bool = False

  @nn.compact
  def __call__(self, feats: jax.Array, coords: jax.Array, valid: jax.Array,
               segment_ids: jax.Array | None = None, layout: dict | None = None) -> jax.Array:
    """segment_ids [B, N] (optional): several samples per row never share a window.
    layout: `window_layout(...)` of these coords (same segment ids) for the packed path."""
    cfg = self.cfg
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    self.variable("constants", "offset_perturbation", lambda: jnp.asarray(
        gaussians.offset_perturbation(cfg.num_gaussians, cfg.voxel_size)))
    kw = dict(dtype=dtype, param_dtype=pdtype)
    x = layers.dense(cfg.width, ("patch", "embed"), use_bias=False, name="input_layer",
                     **kw)(feats.astype(dtype))
    x = x + ape(coords, cfg.width).astype(dtype)
    info = {f"window_{p}": window_ids(coords, valid, cfg, block_shift(cfg, i), segment_ids)
            for i, p in enumerate(PARITIES)}
    cls = nn.remat(transformer.Block) if self.remat else transformer.Block
    for i in range(cfg.depth):
      parity = PARITIES[i % 2]
      block = cls(num_heads=cfg.num_heads, mlp_dim=cfg.mlp_dim, rms_norm=True, use_bias=False,
                  qk_norm=False, mask_fn=_MASKS[parity], eps=cfg.norm_eps,
                  softcap=cfg.softcap, attention_impl=self.attention_impl, name=f"blocks_{i}",
                  **kw)
      if layout is None:
        x, _ = block(x, None, info)
      else:
        x = _packed_block(block, x, valid, layout[parity], f"window_{parity}")
    x = layers.LayerNorm(eps=1e-5, use_scale=False, use_bias=False, name="out_norm")(x)
    return layers.dense(cfg.out_dim, ("embed", "patch"), use_bias=True, name="out_layer",
                        **kw)(x)

  def decode(self, feats, coords, valid, segment_ids=None, layout=None) -> gaussians.Gaussians:
    """Activated Gaussians [B, N * G, ...] (voxel-major) with the stored offset perturbation."""
    raw = self(feats, coords, valid, segment_ids, layout)
    pert = self.get_variable("constants", "offset_perturbation")
    return gaussians.activate(raw, coords, self.cfg, pert)


def init_variables(cfg: config_lib.GaussianDecoderConfig, rng: jax.Array) -> dict[str, Any]:
  """Fresh (unboxed) variables as the release's training code makes them: out_layer zeroed."""
  n = 8
  v = jax.jit(GaussianDecoderNet(cfg).init)(rng, jnp.zeros((1, n, cfg.in_dim)),
                                            jnp.zeros((1, n, 3), jnp.int32),
                                            jnp.ones((1, n), bool))
  v = nn.meta.unbox(v)
  v["params"]["out_layer"] = jax.tree.map(jnp.zeros_like, v["params"]["out_layer"])
  return v


def _packed_block(block: nn.Module, x: jax.Array, valid: jax.Array, lay: dict[str, Any],
                  key: str) -> jax.Array:
  """Runs `block` on the windows packed into bins; padding tokens keep their input."""
  b, n, c = x.shape
  flat = jnp.concatenate([x.reshape(b * n, c), jnp.zeros((1, c), x.dtype)])
  y, _ = block(flat[lay["index"]], None, {key: lay["window"]})  # [R, capacity, C]
  y = y.reshape(-1, c)[lay["inverse"]].reshape(b, n, c)
  return jnp.where(valid[..., None], y, x)
