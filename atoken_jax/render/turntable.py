"""Turntable renders of a Gaussian scene, written as mp4 (PyAV) or GIF (Pillow)."""
from __future__ import annotations

import os
from typing import Sequence

import jax.numpy as jnp
import numpy as np

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


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: int = 24) -> None:
  """Write uint8 frames [V, H, W, 3] to `.mp4` (H.264 via PyAV) or `.gif` (Pillow)."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 [V, H, W, 3], got {frames.dtype} {frames.shape}")
  suffix = os.path.splitext(str(path))[1].lower()
  if suffix == ".gif":
    _write_gif(frames, path, fps)
  elif suffix == ".mp4":
    _write_mp4(frames, path, fps)
  else:
    raise ValueError(f"unsupported video format {suffix!r}: use .mp4 or .gif")


def _write_gif(frames, path, fps):
  from PIL import Image
  images = [Image.fromarray(frame) for frame in frames]
  images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                 duration=max(1, round(1000 / fps)))


def _write_mp4(frames, path, fps):
  import av
  height, width = frames.shape[1:3]
  if height % 2 or width % 2:  # yuv420p needs even sizes
    frames = np.pad(frames, [(0, 0), (0, height % 2), (0, width % 2), (0, 0)], mode="edge")
  with av.open(str(path), mode="w") as container:
    stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4",
                                  rate=fps)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = "yuv420p"
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def write_turntable(path: str | os.PathLike, means, scales, quats_wxyz, opacities, colors, *,
                    fps: int = 24, **turntable_options) -> np.ndarray:
  """`render_turntable` then `write_video`; returns the frames."""
  frames = render_turntable(means, scales, quats_wxyz, opacities, colors, **turntable_options)
  write_video(frames, path, fps)
  return frames
