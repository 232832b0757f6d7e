"""Tile binning: for every tile, the run of overlapping Gaussians in depth order.

Static shapes throughout. Gaussians are sorted once by centre depth; each visible one lists the
tiles its α ≥ 1/255 bounding box touches. The (tile, Gaussian) pairs fill a buffer of
`max_pairs` slots Gaussian by Gaussian, nearest first (so a full buffer drops the farthest
pairs), and are sorted by (tile, depth rank) into one list: tile t owns
`pair_ids[starts[t] : starts[t] + counts[t]]`, nearest first. Nothing of size [tiles, N] or
[tiles, capacity] is built. Exact per-tile loads come from 2D prefix sums over the boxes.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from atoken_jax.render.project import ProjectedGaussians


@flax.struct.dataclass
class TileBins:
  """The depth-sorted pair list and per-tile runs.

  pair_ids [P] int32 Gaussian indices (tile-major, nearest first; unused slots at the end);
  starts [T] int32 first slot of each tile; counts [T] int32 slots each tile composites (at most
  the tile capacity); loads [T] int32 Gaussians whose box touches each tile (counts < loads
  means the tile dropped some); overflow int32 scalar: Σ (loads − counts).
  """
  pair_ids: jax.Array
  starts: jax.Array
  counts: jax.Array
  loads: jax.Array
  overflow: jax.Array


def tile_grid(width: int, height: int, tile_size: int) -> tuple[int, int]:
  """Number of tiles (across, down) covering a width × height image."""
  return -(-width // tile_size), -(-height // tile_size)


def default_max_pairs(num_gaussians: int, num_tiles: int) -> int:
  """Pair buffer size when none is given: 8 per Gaussian, at least 64 per tile, at most N·T."""
  return min(num_gaussians * num_tiles, max(8 * num_gaussians, 64 * num_tiles))


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


def box_counts(first: jax.Array, last: jax.Array, tiles_x: int, tiles_y: int) -> jax.Array:
  """How many of the boxes [first, last] (inclusive, [N, 2] as x, y) cover each tile: [T]."""
  nonempty = jnp.all(last >= first, axis=-1).astype(jnp.int32)
  corners = jnp.zeros((tiles_y + 1, tiles_x + 1), jnp.int32)
  x0, y0 = first[:, 0], first[:, 1]
  x1, y1 = last[:, 0] + 1, last[:, 1] + 1
  corners = corners.at[y0, x0].add(nonempty).at[y0, x1].add(-nonempty)
  corners = corners.at[y1, x0].add(-nonempty).at[y1, x1].add(nonempty)
  covered = jnp.cumsum(jnp.cumsum(corners, axis=0), axis=1)
  return covered[:tiles_y, :tiles_x].reshape(-1)


def bin_gaussians(projected: ProjectedGaussians, width: int, height: int, tile_size: int,
                  capacity: int, max_pairs: int) -> TileBins:
  """Tile runs for `projected` (N Gaussians) on a width × height image.

  `capacity` caps the Gaussians composited per tile (nearest kept); `max_pairs` is the static
  size of the pair buffer.
  """
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

  # Slot p holds pair number p; pairs are numbered Gaussian by Gaussian in depth order. The
  # owner of each slot: write each Gaussian's rank where its pairs begin, then a running max
  # (O(P), several times cheaper than a binary search per slot).
  slots = jnp.arange(max_pairs, dtype=jnp.int32)
  pair_starts = pair_ends - pairs_per_gaussian
  ranks = jnp.arange(num_gaussians, dtype=jnp.int32)
  begins = jnp.zeros(max_pairs, jnp.int32).at[
      jnp.where(pairs_per_gaussian > 0, pair_starts, max_pairs)].max(ranks, mode="drop")
  owner = jax.lax.cummax(begins)
  local = slots - pair_starts[owner]
  row_len = jnp.maximum(span[owner, 0], 1)
  tile_x = first[owner, 0] + local % row_len
  tile_y = first[owner, 1] + local // row_len
  tile_key = jnp.where(slots < pair_ends[-1], tile_y * tiles_x + tile_x, num_tiles)

  starts, buffered, sorted_owner = _group_by_tile(tile_key, owner, num_tiles, num_gaussians)
  loads = box_counts(first, last, tiles_x, tiles_y)
  counts = jnp.minimum(buffered, capacity)
  return TileBins(pair_ids=order[sorted_owner], starts=starts, counts=counts, loads=loads,
                  overflow=jnp.sum(loads - counts).astype(jnp.int32))


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
