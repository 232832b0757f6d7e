"""Multi-view renders -> occupied 64^3 voxels with nearest-view RGB patches (spec §1.3).

The recipe of ml-atoken's `pack_multiview_feat.py`, step by step:
  1. every valid depth pixel of every view is unprojected to a world point; at most
     `max_points` (500k) are kept, drawn at random without replacement when there are more;
  2. a voxel of the 64^3 grid over [-0.5, 0.5]^3 is occupied when a point falls inside it
     (points within 1e-3 outside the box are clamped to the boundary voxels, as TRELLIS clips);
     coords = its (i, j, k) indices along world x, y, z, in lexicographic order;
  3. each occupied voxel's centre is projected into every view; the view with the smallest
     camera-space depth wins (no visibility test);
  4. the voxel takes that view's 16 x 16 RGB patch found by `grid_sample(uv * 2 - 1,
     mode="nearest", align_corners=True)` on the view's 16 x 16 patch grid, i.e. patch
     (row, col) = rint(v * 15), rint(u * 15) (round half to even, as torch's nearbyint);
     outside the grid the feature is zero (grid_sample's zero padding).

We store the choice, not the pixels: `src[n] = (view, patch row, patch col)` (255 = zeros), so
a record keeps the PNG views plus two uint8 arrays and `voxel_feats` rebuilds the [N, 768]
features exactly (channel order (row-in-patch, col-in-patch, rgb), values in [0, 1]).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from atoken_jax.config import FRAME_PATCH_DIM, PATCH_HW, VOXEL_GRID
from data_pipelines import cameras

MAX_POINTS = 500_000
NO_VIEW = 255
BOUNDARY_TOL = 1e-3  # points this close outside the box are clamped in (a mesh normalised to
# the unit cube has faces exactly on x = 0.5, whose voxel index would be 64)


@dataclasses.dataclass(eq=False)
class VoxelAsset:
  """One 3D asset packed for the tokenizer.

  Attributes:
    coords: [N, 3] uint8 voxel indices (i, j, k), lexicographic order.
    src: [N, 3] uint8 (view, patch row, patch col) each voxel takes its patch from;
      255 in the row/col = outside the view (zero feature).
    views: [V, S, S, 3] uint8 RGB renders (S = 256).
    w2c: [V, 4, 4] float32 OpenCV world-to-camera. fov_x: [V] float32 radians.
  """
  coords: np.ndarray
  src: np.ndarray
  views: np.ndarray
  w2c: np.ndarray
  fov_x: np.ndarray


def patch_grid(view: np.ndarray) -> np.ndarray:
  """[S, S, 3] uint8 render -> [S/16, S/16, 768] uint8 patches, order (row-in, col-in, rgb)."""
  s = view.shape[0]
  g = s // PATCH_HW
  x = view[:g * PATCH_HW, :g * PATCH_HW].reshape(g, PATCH_HW, g, PATCH_HW, 3)
  return x.transpose(0, 2, 1, 3, 4).reshape(g, g, FRAME_PATCH_DIM)


def occupancy(depths: np.ndarray, w2c: np.ndarray, fov_x: np.ndarray, rng: np.random.Generator,
              max_points: int = MAX_POINTS, grid: int = VOXEL_GRID) -> np.ndarray:
  """Steps 1-2: depth maps [V, S, S] -> occupied voxel coords [N, 3] int64, lexicographic."""
  points = np.concatenate([cameras.unproject(d, m, f) for d, m, f in zip(depths, w2c, fov_x)])
  if len(points) > max_points:
    points = points[rng.choice(len(points), max_points, replace=False)]
  points = points[(np.abs(points) <= 0.5 + BOUNDARY_TOL).all(axis=1)]
  ijk = np.clip(np.floor((points + 0.5) * grid).astype(np.int64), 0, grid - 1)
  flat = np.unique((ijk[:, 0] * grid + ijk[:, 1]) * grid + ijk[:, 2])
  return np.stack([flat // (grid * grid), flat // grid % grid, flat % grid], axis=1)


def nearest_view_patches(coords: np.ndarray, w2c: np.ndarray, fov_x: np.ndarray,
                         patches_per_side: int, grid: int = VOXEL_GRID) -> np.ndarray:
  """Steps 3-4: coords [N, 3] -> src [N, 3] uint8 (view, patch row, patch col; 255 = none)."""
  centres = (coords.astype(np.float64) + 0.5) / grid - 0.5
  uvs, depths = zip(*(cameras.project(centres, m, f) for m, f in zip(w2c, fov_x)))
  depth = np.stack(depths)  # [V, N]
  depth = np.where(depth > 0, depth, np.inf)  # a view behind the voxel never wins
  view = np.argmin(depth, axis=0)
  uv = np.stack(uvs)[view, np.arange(len(coords))]  # [N, 2]
  last = patches_per_side - 1
  with np.errstate(invalid="ignore"):
    col, row = np.rint(uv[:, 0] * last), np.rint(uv[:, 1] * last)
  inside = (col >= 0) & (col <= last) & (row >= 0) & (row <= last)
  src = np.full((len(coords), 3), NO_VIEW, np.uint8)
  src[:, 0] = view
  src[inside, 1] = row[inside]
  src[inside, 2] = col[inside]
  return src


def voxelize_views(views: np.ndarray, depths: np.ndarray, w2c: np.ndarray, fov_x: np.ndarray,
                   rng: np.random.Generator, max_points: int = MAX_POINTS) -> VoxelAsset:
  """Renders [V, S, S, 3] uint8 + depths [V, S, S] + cameras -> `VoxelAsset`.

  Raises:
    ValueError: no valid depth pixel lands in the grid (nothing to voxelise), or bad shapes.
  """
  views, depths = np.asarray(views), np.asarray(depths)
  v, s = views.shape[0], views.shape[1]
  if views.shape != (v, s, s, 3) or views.dtype != np.uint8 or depths.shape != (v, s, s):
    raise ValueError(f"need views [V, S, S, 3] uint8 and depths [V, S, S], got {views.shape} "
                     f"{views.dtype} and {depths.shape}")
  if s % PATCH_HW or v > NO_VIEW:
    raise ValueError(f"view size {s} must be a multiple of {PATCH_HW}; at most {NO_VIEW} views")
  coords = occupancy(depths, w2c, fov_x, rng, max_points)
  if len(coords) == 0:
    raise ValueError("no depth pixel falls inside the [-0.5, 0.5]^3 grid")
  src = nearest_view_patches(coords, w2c, fov_x, s // PATCH_HW)
  return VoxelAsset(coords=coords.astype(np.uint8), src=src, views=views,
                    w2c=np.asarray(w2c, np.float32), fov_x=np.asarray(fov_x, np.float32))


def voxel_feats(src: np.ndarray, views: np.ndarray) -> np.ndarray:
  """src [N, 3] + views [V, S, S, 3] uint8 -> feats [N, 768] float32 in [0, 1]."""
  grids = np.stack([patch_grid(v) for v in views])  # [V, g, g, 768]
  g = grids.shape[1]
  src = np.asarray(src).astype(np.int64)
  if len(src) and (src[:, 0].max() >= len(views)):
    raise ValueError(f"voxel refers to view {src[:, 0].max()} of {len(views)}")
  inside = (src[:, 1] < g) & (src[:, 2] < g)
  if not (inside | ((src[:, 1] == NO_VIEW) & (src[:, 2] == NO_VIEW))).all():
    raise ValueError(f"voxel patch indices must be < {g} or {NO_VIEW}")
  feats = np.zeros((len(src), FRAME_PATCH_DIM), np.float32)
  s = src[inside]
  feats[inside] = grids[s[:, 0], s[:, 1], s[:, 2]] / np.float32(255.0)
  return feats
