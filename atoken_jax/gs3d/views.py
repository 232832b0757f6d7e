"""A 3D record's stored views and cameras as arrays, and its voxels as Gaussian-decoder input.

A prepared "voxels" record (see `data_pipelines.voxelize.VoxelAsset`) carries the V renders the
voxels were built from (256², black background), their OpenCV world-to-camera matrices `w2c`
[V, 4, 4] and horizontal fields of view `fov_x` [V] (radians). The data pipeline's projection is
u = fx·x/z + 0.5 with fx = 0.5 / tan(fov_x / 2) in image-width units and pixel (row r, col c)
centred at ((c + 0.5)/S, (r + 0.5)/S); in pixels that is exactly `render.Camera` with
fx = fy = 0.5·S / tan(fov_x / 2) and cx = cy = S / 2, at any render size S.

  asset = asset_from_record(record_bytes)                  # VoxelAsset
  cams = cameras_from_asset(asset, size=256)               # stacked Camera, [V] leading axis
  images = target_images(asset.views, size=256)            # [V, S, S, 3] float32 in [0, 1]
  feats, coords = ground_truth_voxels(asset)               # [N, 768] in [-1, 1], [N, 3] int32

Near/far: Gaussians are culled outside [near, far] by centre depth. TRELLIS' rasteriser culls only
at z <= 0.2 (its near 0.8 / far 1.6 live in the projection matrix), so the defaults here are
near=0.2 and a large far (docs/render.md).
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from PIL import Image

from atoken_jax.config import FRAME_PATCH_DIM
from atoken_jax.render import Camera

NEAR = 0.2
FAR = 100.0


def asset_from_record(record, num_views: int = 16, seed: int = 0):
  """Record bytes (`records.encode_record`) or a decoded record dict -> `VoxelAsset`.

  Meshes and NeRF folders in a record are rendered / read as the data pipeline does
  (`decode.voxel_asset`). Raises `data_pipelines.decode.BadData` for unusable records, and
  ValueError when the record carries no cameras (they are needed to render its views).
  """
  from data_pipelines import decode, records  # pylint: disable=import-outside-toplevel
  if isinstance(record, (bytes, bytearray, memoryview)):
    try:
      record = records.decode_record(record)
    except records.RecordError as e:
      raise decode.BadData("decode_error", str(e)) from None
  asset = decode.voxel_asset(record, num_views, seed)
  if len(asset.w2c) != len(asset.views) or len(asset.fov_x) != len(asset.views):
    raise ValueError(f"record {record.get('name')!r} has {len(asset.views)} views but "
                     f"{len(asset.w2c)} cameras: it cannot be rendered against")
  return asset


def cameras(w2c, fov_x, size: int, near: float = NEAR, far: float = FAR) -> Camera:
  """OpenCV w2c [V, 4, 4] + fov_x [V] (radians) -> one stacked square `Camera` of `size` px.

  Fields fx, fy, cx, cy, near, far are [V] float32, world_to_camera [V, 4, 4].
  """
  w2c, fov_x = np.asarray(w2c), np.asarray(fov_x).reshape(-1)
  if w2c.ndim != 3 or w2c.shape[1:] != (4, 4) or len(fov_x) != len(w2c):
    raise ValueError(f"need w2c [V, 4, 4] and fov_x [V], got {w2c.shape} and {fov_x.shape}")
  return camera_from_arrays(camera_arrays(w2c, fov_x, size), size, near, far)


def cameras_from_asset(asset, size: int | None = None, views: Sequence[int] | None = None,
                       near: float = NEAR, far: float = FAR) -> Camera:
  """The asset's cameras (all, or `views`) at `size` px (default: the stored size)."""
  idx = np.arange(len(asset.views)) if views is None else np.asarray(views)
  size = int(size or asset.views.shape[1])
  return cameras(np.asarray(asset.w2c)[idx], np.asarray(asset.fov_x)[idx], size, near, far)


def camera_arrays(w2c, fov_x, size: int) -> dict[str, np.ndarray]:
  """Host-side camera fields for a batch: w2c [..., 4, 4] float32 and fx, fy, cx, cy [...]."""
  fov_x = np.asarray(fov_x, np.float64)
  focal = (0.5 * size / np.tan(0.5 * fov_x)).astype(np.float32)
  centre = np.full(fov_x.shape, 0.5 * size, np.float32)
  return {"w2c": np.asarray(w2c, np.float32), "fx": focal, "fy": focal, "cx": centre,
          "cy": centre.copy()}


def camera_from_arrays(arrays, size: int, near: float = NEAR, far: float = FAR) -> Camera:
  """Inverse of `camera_arrays` (traceable): a `Camera` whose fields have the arrays' leading
  axes, e.g. [B, K] for a batch of K views per asset."""
  fx = jnp.asarray(arrays["fx"])
  return Camera(fx=fx, fy=jnp.asarray(arrays["fy"]), cx=jnp.asarray(arrays["cx"]),
                cy=jnp.asarray(arrays["cy"]), world_to_camera=jnp.asarray(arrays["w2c"]),
                width=int(size), height=int(size), near=jnp.full(fx.shape, near, fx.dtype),
                far=jnp.full(fx.shape, far, fx.dtype))


def target_images(views, size: int | None = None) -> np.ndarray:
  """uint8 views [V, S, S, 3] -> float32 [V, size, size, 3] in [0, 1] (PIL Lanczos resize when
  `size` differs from S, as `data_pipelines.assets3d` resizes renders)."""
  views = np.asarray(views)
  if views.ndim != 4 or views.shape[-1] != 3 or views.dtype != np.uint8:
    raise ValueError(f"views must be uint8 [V, S, S, 3], got {views.dtype} {views.shape}")
  size = int(size or views.shape[1])
  if size != views.shape[1] or size != views.shape[2]:
    views = np.stack([np.asarray(Image.fromarray(v).resize((size, size), Image.LANCZOS))
                      for v in views])
  return views.astype(np.float32) / np.float32(255.0)


def ground_truth_voxels(asset) -> tuple[np.ndarray, np.ndarray]:
  """-> (feats [N, 768] float32 in [-1, 1], coords [N, 3] int32): the Gaussian decoder's input
  built from the asset's own nearest-view patches (what a perfect tokenizer would return; the
  release feeds `rec.feats[:, :768]`, also in [-1, 1])."""
  from data_pipelines import voxelize  # pylint: disable=import-outside-toplevel
  feats = voxelize.voxel_feats(asset.src, asset.views)
  return feats * np.float32(2.0) - np.float32(1.0), np.asarray(asset.coords, np.int32)


def pad_voxels(feats, coords, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """[N, C] feats, [N, 3] coords -> ([L, C], [L, 3] int32, valid [L] bool), zero padding.

  Raises ValueError when N > length.
  """
  feats, coords = np.asarray(feats, np.float32), np.asarray(coords, np.int32)
  n = len(coords)
  if n > length:
    raise ValueError(f"{n} voxels do not fit a row of {length}")
  out_f = np.zeros((length, feats.shape[1]), np.float32)
  out_c = np.zeros((length, 3), np.int32)
  valid = np.zeros((length,), bool)
  out_f[:n], out_c[:n], valid[:n] = feats, coords, True
  return out_f, out_c, valid


def choose_views(num_stored: int, k: int, rng: np.random.Generator | None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """K view indices out of `num_stored` (-> (indices [K] int, mask [K] bool)).

  Distinct random views when `rng` is given, else the first K; when fewer than K are stored the
  rest repeat view 0 with mask False (they never enter the loss or the metrics).
  """
  take = min(k, num_stored)
  idx = rng.permutation(num_stored)[:take] if rng is not None else np.arange(take)
  mask = np.zeros((k,), bool)
  mask[:take] = True
  return np.concatenate([idx, np.zeros(k - take, idx.dtype)]).astype(np.int64), mask


def voxel_centres(coords, resolution: int = 64) -> np.ndarray:
  """[N, 3] integer voxel indices -> world-space centres [N, 3] in the [-0.5, 0.5]³ box."""
  return (np.asarray(coords, np.float32) + 0.5) / resolution - 0.5


def patch_mean_colours(feats01) -> np.ndarray:
  """[N, 768] voxel features in [0, 1] (16 x 16 RGB) -> mean colour [N, 3]."""
  feats01 = np.asarray(feats01, np.float32)
  if feats01.shape[-1] != FRAME_PATCH_DIM:
    raise ValueError(f"voxel features must have {FRAME_PATCH_DIM} channels, got {feats01.shape}")
  return feats01.reshape(len(feats01), -1, 3).mean(1)
