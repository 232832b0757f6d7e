"""Turntable renders of a Gaussian scene, written as mp4 (PyAV) or GIF (Pillow)."""
from __future__ import annotations

import os
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from atoken_jax.media import write_video

from atoken_jax.render.camera import orbit_cameras
from atoken_jax.render.rasterize import rasterize


def render_turntable(means, scales, quats_wxyz, opacities, colors, *, num_views: int = 60,
                     radius: float = 2.0, elevation_deg: float = 20.0, fov_deg: float = 40.0,
                     width: int = 512, height: int | None = None,
                     target: Sequence[float] = (0.0, 0.0, 0.0),
                     up: Sequence[float] = (0.0, 0.0, 1.0), near: float = 0.2,
                     far: float = 100.0, **render_options) -> np.ndarray:
  """Render `num_views` views on a circle around `target`; returns uint8 frames [V, H, W, 3].

  Defaults follow the TRELLIS video setup (radius 2, 40° field of view, z up). Extra keyword
  arguments go to `rasterize` (background, filter_2d, mip, tile_capacity, ...). `rasterize`
  compiles once and is reused for every camera; memory stays at one view's worth.
  """
  height = width if height is None else height
  cameras = orbit_cameras(num_views, radius, elevation_deg, fov_deg, width, height,
                          target=target, up=up, near=near, far=far)
  params = [jnp.asarray(x) for x in (means, scales, quats_wxyz, opacities, colors)]
  frames = []
  for index in range(num_views):
    rgb = np.asarray(rasterize(*params, cameras.view(index), **render_options).rgb)
    frames.append(np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8))
  return np.stack(frames)


def write_turntable(path: str | os.PathLike, means, scales, quats_wxyz, opacities, colors, *,
                    fps: int = 24, **turntable_options) -> np.ndarray:
  """`render_turntable` then `write_video`; returns the frames."""
  frames = render_turntable(means, scales, quats_wxyz, opacities, colors, **turntable_options)
  write_video(frames, path, fps)
  return frames
