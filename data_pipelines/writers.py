"""Building records of each kind (for `prepare`, the bundled dataset and tests).

Images and videos are stored as their encoded files (decoded at training time, so the record is
as small as the original); 3D assets as voxel coords, each voxel's (view, patch) source, the
views as PNG and the cameras (see `voxelize.VoxelAsset`).
"""
from __future__ import annotations

import io
from typing import Optional

import numpy as np
from PIL import Image

from atoken_jax import media
from data_pipelines import records
from data_pipelines.voxelize import VoxelAsset


def image_record(name: str, data: bytes, caption: Optional[str] = None) -> bytes:
  return records.encode_record("image", name, {"bytes": data}, caption)


def video_record(name: str, data: bytes, caption: Optional[str] = None) -> bytes:
  return records.encode_record("video", name, {"bytes": data}, caption)


def png_bytes(pixels: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG", compress_level=6)
  return buf.getvalue()


def voxel_record(name: str, asset: VoxelAsset, caption: Optional[str] = None) -> bytes:
  fields = {"coords": np.asarray(asset.coords, np.uint8), "src": np.asarray(asset.src, np.uint8),
            "views": [png_bytes(v) for v in asset.views],
            "w2c": np.asarray(asset.w2c, np.float32), "fov_x": np.asarray(asset.fov_x, np.float32)}
  return records.encode_record("voxels", name, fields, caption)


def encode_image(pixels: np.ndarray, fmt: str = "JPEG", quality: int = 90) -> bytes:
  """uint8 [H, W, 3] -> encoded image bytes."""
  buf = io.BytesIO()
  kwargs = {"quality": quality} if fmt.upper() in ("JPEG", "WEBP") else {}
  Image.fromarray(pixels).save(buf, format=fmt, **kwargs)
  return buf.getvalue()


def encode_video(frames: np.ndarray, fps: int = 24) -> bytes:
  """uint8 [T, H, W, 3] -> encoded mp4 bytes."""
  return media.mp4_bytes(frames, fps)
