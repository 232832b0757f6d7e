"""`rasterize`: render N 3D Gaussians seen by one camera to RGB, alpha and depth images.

Pipeline: (optional SH → RGB, optional 3D filter) → EWA projection (`project.py`) → tile binning
into a static pair buffer, optional per-tile capacity (`binning.py`) → front-to-back compositing
with a hand-written VJP (`composite.py`). Works under `jax.jit`, `jax.grad` and `jax.vmap` (over
cameras); the options that fix shapes are static.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from atoken_jax.render.binning import bin_gaussians, default_max_pairs, tile_grid
from atoken_jax.render.camera import Camera
from atoken_jax.render.composite import composite_tiles
from atoken_jax.render.project import apply_filter_3d, project_gaussians
from atoken_jax.render.sh import sh_degree_from_coeffs, sh_to_rgb


@flax.struct.dataclass
class RenderOutput:
  """One rendered view.

  rgb [H, W, C] composited colour over the background; alpha [H, W] = 1 − final transmittance;
  depth [H, W] expected depth Σ wᵢzᵢ / alpha of the centres' camera z (0 where alpha = 0);
  overflow int32 scalar: (tile, Gaussian) overlaps not composited because a tile was full
  (`tile_capacity`) or the pair buffer was (`max_pairs`);
  lossy_tiles int32 scalar: tiles that dropped Gaussians while some pixel was still unfinished
  (not ended by the transmittance cut-off) — only these can differ from the exact image, so
  lossy_tiles == 0 means exact even when overflow > 0;
  max_tile_load int32 scalar: the largest number of Gaussians whose footprint box touches one
  tile (a `tile_capacity` at or above it never overflows).
  """
  rgb: jax.Array
  alpha: jax.Array
  depth: jax.Array
  overflow: jax.Array
  lossy_tiles: jax.Array
  max_tile_load: jax.Array


def rasterize(means, scales, quats_wxyz, opacities, colors, camera: Camera,
              background: Sequence[float] | jax.Array = (0.0, 0.0, 0.0), filter_2d=0.0,
              mip: bool = False, *, filter_3d=0.0, tile_capacity: int | None = None,
              max_pairs: int | None = None, tile_size: int = 16,
              tiles_per_batch: int | None = None, block_size: int | None = None) -> RenderOutput:
  """Render Gaussians (activated values, not raw decoder outputs).

  Args:
    means [N, 3] world positions; scales [N, 3] standard deviations along the local axes;
    quats_wxyz [N, 4] rotations (normalised here); opacities [N] in [0, 1];
    colors [N, C] colours used as given, or [N, M, C] SH coefficients with M ∈ {1, 4, 9, 16}
      (gsplat convention: colour = max(SH(dir) + 0.5, 0));
    camera: a single `Camera` (vmap this function for several);
    background [C] colour behind the Gaussians;
    filter_2d: variance (pixels²) added to every projected covariance (mip-splatting 2D filter,
      TRELLIS uses 0.1; gsplat's `eps2d`);
    mip: multiply opacities by √(det Σ2d / det(Σ2d + filter_2d·I)) (mip-splatting /
      gsplat "antialiased");
    filter_3d: scalar or [N] world-space std of mip-splatting's 3D filter (scales become
      √(s² + f²), opacities are scaled by √(det Σ / det Σ_filtered)); 0 = off;
    tile_capacity: K, most Gaussians composited per tile (the nearest are kept; see
      `overflow`); None = no limit;
    max_pairs: static size of the (tile, Gaussian) pair buffer; None =
      `binning.default_max_pairs(N, tiles)` (8 per Gaussian, at least 64 per tile). When the
      overlaps exceed it the farthest Gaussians' pairs are dropped and counted in `overflow`;
    tile_size: tile edge in pixels;
    tiles_per_batch, block_size: work granularity — tiles composited side by side, and
      Gaussians per loop step (unrolled, so larger blocks compile slower). None = 4 and 16 on
      CPU (fastest on a 2-core machine), 256 and 32 on accelerators.
  Returns a `RenderOutput`.
  """
  means, scales, quats_wxyz, opacities, colors = _check_inputs(
      means, scales, quats_wxyz, opacities, colors, camera)
  num_channels = colors.shape[-1]
  background = jnp.asarray(background, means.dtype)
  if background.shape != (num_channels,):
    raise ValueError(f"background must have {num_channels} values (one per colour channel), "
                     f"got shape {background.shape}")
  sizes = _static_sizes(means.shape[0], camera, tile_capacity=tile_capacity,
                        max_pairs=max_pairs, tile_size=tile_size,
                        tiles_per_batch=tiles_per_batch, block_size=block_size)
  filter_3d = jnp.asarray(filter_3d, means.dtype)
  if filter_3d.shape not in ((), (means.shape[0],)):
    raise ValueError(f"filter_3d must be a scalar or [N={means.shape[0]}], "
                     f"got shape {filter_3d.shape}")
  filter_3d = jnp.broadcast_to(filter_3d, means.shape[:1])
  if colors.ndim == 3:  # evaluated outside `_render` so that SH and RGB share its compilation
    colors = _sh_colors(colors, means, camera)
  return _render(means, scales, quats_wxyz, opacities, colors, camera, background,
                 jnp.asarray(filter_2d, means.dtype), jnp.asarray(mip, bool), filter_3d,
                 **sizes)


def _static_sizes(num_gaussians, camera, **sizes):
  """Validates the shape-fixing options and fills in their defaults (see `rasterize`)."""
  on_cpu = jax.default_backend() == "cpu"
  defaults = dict(tiles_per_batch=4 if on_cpu else 256, block_size=16 if on_cpu else 32)
  for name, value in sizes.items():
    if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  sizes = {name: int(value) if value is not None else defaults.get(name)
           for name, value in sizes.items()}
  tiles_x, tiles_y = tile_grid(camera.width, camera.height, sizes["tile_size"])
  if sizes["tile_capacity"] is None:
    sizes["tile_capacity"] = num_gaussians
  if sizes["max_pairs"] is None:
    sizes["max_pairs"] = default_max_pairs(num_gaussians, tiles_x * tiles_y)
  return sizes


def _check_inputs(means, scales, quats_wxyz, opacities, colors, camera):
  """Shape checks that run at trace time, before anything compiles."""
  if not isinstance(camera, Camera):
    raise ValueError(f"camera must be an atoken_jax.render.Camera, got {type(camera).__name__}")
  means = jnp.asarray(means)
  if means.ndim != 2 or means.shape[1] != 3 or means.shape[0] < 1:
    raise ValueError(f"means must be [N, 3] with N >= 1, got shape {means.shape}")
  if not jnp.issubdtype(means.dtype, jnp.floating):
    means = means.astype(jnp.float32)
  n = means.shape[0]
  arrays = {"scales": (scales, (n, 3)), "quats_wxyz": (quats_wxyz, (n, 4)),
            "opacities": (opacities, (n,))}
  checked = []
  for name, (value, shape) in arrays.items():
    value = jnp.asarray(value, means.dtype)
    if value.shape != shape:
      raise ValueError(f"{name} must have shape {list(shape)} to match means [N={n}, 3], "
                       f"got {value.shape}")
    checked.append(value)
  colors = jnp.asarray(colors, means.dtype)
  if colors.ndim == 3:
    sh_degree_from_coeffs(colors.shape[1])
  if colors.ndim not in (2, 3) or colors.shape[0] != n or colors.shape[-1] < 1:
    raise ValueError(f"colors must be [N={n}, C] or SH coefficients [N, M, C], "
                     f"got shape {colors.shape}")
  w2c_shape = jnp.shape(camera.world_to_camera)
  if w2c_shape != (4, 4):
    raise ValueError(f"camera.world_to_camera must be [4, 4] (one camera; vmap for a stack), "
                     f"got {w2c_shape}")
  for name in ("fx", "fy", "cx", "cy", "near", "far"):
    if jnp.ndim(getattr(camera, name)) != 0:
      raise ValueError(f"camera.{name} must be a scalar, got shape "
                       f"{jnp.shape(getattr(camera, name))}")
  for name in ("width", "height"):
    value = getattr(camera, name)
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"camera.{name} must be a positive int, got {value!r}")
  return (means, *checked, colors)


@functools.partial(jax.jit, static_argnames=("tile_capacity", "max_pairs", "tile_size",
                                             "tiles_per_batch", "block_size"))
def _render(means, scales, quats_wxyz, opacities, colors, camera, background, filter_2d, mip,
            filter_3d, *, tile_capacity, max_pairs, tile_size, tiles_per_batch, block_size):
  scales, opacities = apply_filter_3d(scales, opacities, filter_3d)
  projected = project_gaussians(means, scales, quats_wxyz, opacities, camera, filter_2d, mip)
  bins = bin_gaussians(projected, camera.width, camera.height, tile_size, tile_capacity,
                       max_pairs)

  features = jnp.concatenate([colors, projected.depths[:, None]], axis=-1)
  opacities = jnp.where(projected.visible, projected.opacities, 0.0)
  tiles_x, tiles_y = tile_grid(camera.width, camera.height, tile_size)
  tile_index = jnp.arange(tiles_x * tiles_y)
  origins = jnp.stack([tile_index % tiles_x, tile_index // tiles_x], axis=-1) * tile_size
  out, transmittance, ended = composite_tiles(
      projected.means2d, projected.conics, opacities, features, bins.pair_ids, bins.starts,
      bins.counts, origins, tile_size=tile_size, tiles_per_batch=tiles_per_batch,
      block_size=block_size)

  unfinished = (ended < 0.5) & _pixels_in_image(origins, tile_size, camera.width, camera.height)
  lossy_tiles = jnp.sum((bins.loads > bins.counts) & jnp.any(unfinished, axis=-1))
  image = _tiles_to_image(jnp.concatenate([out, transmittance[..., None]], axis=-1), tiles_x,
                          tiles_y, tile_size)[:camera.height, :camera.width]
  num_channels = colors.shape[-1]
  transmittance = image[..., -1]
  alpha = 1.0 - transmittance
  rgb = image[..., :num_channels] + transmittance[..., None] * background
  has_alpha = alpha > 0
  depth = jnp.where(has_alpha, image[..., num_channels] / jnp.where(has_alpha, alpha, 1.0), 0.0)
  return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, overflow=bins.overflow,
                      lossy_tiles=lossy_tiles.astype(jnp.int32),
                      max_tile_load=jnp.max(bins.loads).astype(jnp.int32))


@jax.jit
def _sh_colors(coeffs, means, camera):
  """[N, M, C] SH coefficients → [N, C] colours seen from the camera centre."""
  return sh_to_rgb(coeffs, means, camera.camera_center.astype(means.dtype))


def _tiles_to_image(tiles, tiles_x, tiles_y, tile_size):
  """[T, tile², F] tiles in row-major tile order → [tiles_y·tile, tiles_x·tile, F]."""
  num_features = tiles.shape[-1]
  grid = tiles.reshape(tiles_y, tiles_x, tile_size, tile_size, num_features)
  return grid.transpose(0, 2, 1, 3, 4).reshape(tiles_y * tile_size, tiles_x * tile_size,
                                                num_features)


def _pixels_in_image(origins, tile_size, width, height):
  """[T, tile²] bool: which pixels of each tile (origins [T, 2] as x, y) lie inside the image."""
  local = jnp.arange(tile_size)
  inside_x = (origins[:, None, 0] + local[None, :]) < width
  inside_y = (origins[:, None, 1] + local[None, :]) < height
  return (inside_y[:, :, None] & inside_x[:, None, :]).reshape(len(origins), -1)
