"""Tile binning: for every tile, the (at most K) nearest-in-depth Gaussians that overlap it.

Static shapes throughout. Gaussians are sorted once by centre depth; each visible one lists the
tiles its α ≥ 1/255 bounding box touches; the (tile, Gaussian) pairs go into a buffer of
`num_tiles·K` slots (more pairs than that means some tile is over capacity anyway), are sorted
by (tile, depth rank), and each tile keeps its first K pairs — the K nearest. Cost is one sort
of num_tiles·K 32-bit keys; nothing of size [tiles, N] is ever built.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from atoken_jax.render.project import ProjectedGaussians


@flax.struct.dataclass
class TileBins:
  """Per-tile Gaussian lists, nearest first.

  ids [T, K] int32 indices into the N Gaussians (0 where unused); valid [T, K] bool;
  counts [T] int32 pairs that reached the tile (≥ K means full); overflow int32 scalar, overlaps
  not composited for lack of room; max_load int32 scalar, the largest per-tile count seen.
  """
  ids: jax.Array
  valid: jax.Array
  counts: jax.Array
  overflow: jax.Array
  max_load: jax.Array


def tile_grid(width: int, height: int, tile_size: int) -> tuple[int, int]:
  """Number of tiles (across, down) covering a width × height image."""
  return -(-width // tile_size), -(-height // tile_size)


def tile_ranges(means2d: jax.Array, radii: jax.Array, visible: jax.Array, tiles_x: int,
                tiles_y: int, tile_size: int) -> tuple[jax.Array, jax.Array]:
  """Inclusive tile index ranges touched by each Gaussian's bounding box.

  A tile's pixel centres span [t·s + 0.5, t·s + s − 0.5] along an axis. Returns (first [N, 2],
  last [N, 2]) as (x, y) int32; empty ranges (last < first) for invisible or off-screen ones.
  """
  means2d = jax.lax.stop_gradient(means2d)
  lower = (means2d - radii - (tile_size - 0.5)) / tile_size
  upper = (means2d + radii - 0.5) / tile_size
  limits = jnp.array([tiles_x, tiles_y], means2d.dtype)
  first = jnp.ceil(jnp.clip(lower, -1.0, limits)).astype(jnp.int32)
  last = jnp.floor(jnp.clip(upper, -1.0, limits)).astype(jnp.int32)
  first = jnp.maximum(first, 0)
  last = jnp.minimum(last, jnp.array([tiles_x - 1, tiles_y - 1], jnp.int32))
  last = jnp.where(visible[:, None], last, first - 1)
  return first, last


def bin_gaussians(projected: ProjectedGaussians, width: int, height: int, tile_size: int,
                  capacity: int) -> TileBins:
  """Tile lists for `projected` (N Gaussians) on a width × height image."""
  tiles_x, tiles_y = tile_grid(width, height, tile_size)
  num_tiles = tiles_x * tiles_y
  num_gaussians = projected.depths.shape[0]

  depth_key = jnp.where(projected.visible, jax.lax.stop_gradient(projected.depths), jnp.inf)
  order = jnp.argsort(depth_key, stable=True).astype(jnp.int32)
  first, last = tile_ranges(projected.means2d[order], projected.radii[order],
                            projected.visible[order], tiles_x, tiles_y, tile_size)
  span = jnp.maximum(last - first + 1, 0)
  pairs_per_gaussian = span[:, 0] * span[:, 1]
  pair_ends = jnp.cumsum(pairs_per_gaussian)
  total_pairs = pair_ends[-1]

  # Slot p holds pair number p; pairs are numbered Gaussian by Gaussian in depth order.
  num_slots = min(num_tiles * capacity, num_tiles * num_gaussians)
  slots = jnp.arange(num_slots, dtype=jnp.int32)
  owner = jnp.minimum(jnp.searchsorted(pair_ends, slots, side="right"), num_gaussians - 1)
  local = slots - (pair_ends[owner] - pairs_per_gaussian[owner])
  row_len = jnp.maximum(span[owner, 0], 1)
  tile_x = first[owner, 0] + local % row_len
  tile_y = first[owner, 1] + local // row_len
  tile_key = jnp.where(slots < total_pairs, tile_y * tiles_x + tile_x, num_tiles)

  starts, counts, sorted_owner = _group_by_tile(tile_key, owner, num_tiles, num_gaussians)

  lane = jnp.arange(capacity, dtype=jnp.int32)
  valid = lane[None, :] < counts[:, None]
  positions = jnp.minimum(starts[:, None] + lane[None, :], num_slots - 1)
  ids = jnp.where(valid, order[sorted_owner[positions]], 0)
  composited = jnp.sum(jnp.minimum(counts, capacity))
  return TileBins(ids=ids, valid=valid, counts=counts,
                  overflow=(total_pairs - composited).astype(jnp.int32),
                  max_load=jnp.max(counts).astype(jnp.int32))


def _group_by_tile(tile_key, owner, num_tiles, num_gaussians):
  """Sort pairs by (tile, owner); owners are depth ranks, so each tile's run is nearest first.

  tile_key [P] int32 in [0, num_tiles] (num_tiles marks an unused slot); owner [P] int32.
  Returns (starts [T], counts [T], sorted_owner [P]). When tile·N + owner fits in 32 bits the
  pair is packed into one uint32 key, which XLA sorts several times faster than key + payload.
  """
  tile_index = jnp.arange(num_tiles + 1, dtype=jnp.uint32)
  if (num_tiles + 1) * num_gaussians < 2 ** 32:
    packed = jnp.sort(tile_key.astype(jnp.uint32) * num_gaussians + owner.astype(jnp.uint32))
    sorted_owner = (packed % num_gaussians).astype(jnp.int32)
    bounds = jnp.searchsorted(packed, tile_index * num_gaussians, side="left")
  else:
    sorted_key, sorted_owner = jax.lax.sort((tile_key, owner), num_keys=2)
    bounds = jnp.searchsorted(sorted_key, tile_index.astype(jnp.int32), side="left")
  bounds = bounds.astype(jnp.int32)
  return bounds[:-1], bounds[1:] - bounds[:-1], sorted_owner
