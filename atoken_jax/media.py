"""Writing frames as video: mp4 (H.264 via PyAV, mpeg4 where libx264 is missing) or GIF."""
from __future__ import annotations

import io
import os
from typing import BinaryIO

import numpy as np


def _check(frames: np.ndarray) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  return frames


def write_mp4(frames: np.ndarray, target: str | os.PathLike | BinaryIO, fps: int = 24,
              crf: int | None = None) -> None:
  """uint8 [T, H, W, 3] -> an mp4 file or file object (odd sizes edge-padded to even)."""
  import av  # pylint: disable=import-outside-toplevel
  frames = _check(frames)
  height, width = frames.shape[1:3]
  if height % 2 or width % 2:  # yuv420p needs even sizes
    frames = np.pad(frames, [(0, 0), (0, height % 2), (0, width % 2), (0, 0)], mode="edge")
  target = target if hasattr(target, "write") else str(target)
  with av.open(target, mode="w", format="mp4") as container:
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = "yuv420p"
    if codec == "libx264" and crf is not None:
      stream.options = {"crf": str(crf), "preset": "veryfast"}
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame),
                                                             format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def mp4_bytes(frames: np.ndarray, fps: int = 24, crf: int | None = 20) -> bytes:
  buf = io.BytesIO()
  write_mp4(frames, buf, fps, crf)
  return buf.getvalue()


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: int = 24) -> None:
  """uint8 [T, H, W, 3] to `.mp4` or `.gif`, chosen by the suffix."""
  frames = _check(frames)
  suffix = os.path.splitext(str(path))[1].lower()
  if suffix == ".gif":
    from PIL import Image  # pylint: disable=import-outside-toplevel
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                   duration=max(1, round(1000 / fps)))
  elif suffix == ".mp4":
    write_mp4(frames, path, fps)
  else:
    raise ValueError(f"unsupported video format {suffix!r}: use .mp4 or .gif")
