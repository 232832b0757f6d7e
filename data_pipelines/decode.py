"""Decoding: record fields -> PIL images, selected video frames, voxel sets.

Every failure raises `BadData(reason, message)`; the sample stage turns it into a counted skip.
Reasons used here: "decode_error" (unreadable / corrupt / truncated file), "empty_file"
(0 bytes), "empty_image" (zero-size picture), "too_few_frames" (a video with fewer than 4
frames), "no_faces" (a mesh without triangles), "no_voxels" (a 3D asset with nothing inside the
grid), "wrong_kind" (a record of another modality), "too_large" (a decompression bomb).
"""
from __future__ import annotations

import io
import warnings
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image, ImageOps

from data_pipelines import assets3d, voxelize

_EXIF_ORIENTATION = 0x0112


class BadData(Exception):
  """A sample that cannot be used; `reason` is the counter it goes to."""

  def __init__(self, reason: str, message: str = ""):
    super().__init__(f"{reason}: {message}" if message else reason)
    self.reason = reason
    self.message = message


def _pil_from_array(pixels) -> Image.Image:
  x = np.asarray(pixels)
  if x.ndim == 3 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.dtype != np.uint8 or x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[-1] not in (3, 4)):
    raise BadData("decode_error", f"pixels must be uint8 [H, W(, 1|3|4)], got {x.dtype} "
                  f"{x.shape}")
  return Image.fromarray(x)


def decode_image(record: dict, size_for: Optional[Callable[[int, int], tuple]] = None
                 ) -> Image.Image:
  """An "image" record ({"bytes"} encoded file, or {"pixels"} uint8 array) -> RGB PIL image.

  Args:
    record: the record dict.
    size_for: optional (height, width) -> (target height, target width), called with the
      upright size read from the file header before the pixels are decoded; a JPEG is then
      decoded at the smallest power-of-two reduction that still covers the target (DCT
      scaling: much faster for large photos, same result after the resize that follows).
  """
  if record.get("kind") != "image":
    raise BadData("wrong_kind", f"expected an image record, got {record.get('kind')!r}")
  if "pixels" in record:
    img = _pil_from_array(record["pixels"])
    if img.width == 0 or img.height == 0:
      raise BadData("empty_image", f"size {img.size}")
    if size_for is not None:
      size_for(img.height, img.width)
    return img.convert("RGB") if img.mode != "RGB" else img
  data = record.get("bytes", b"")
  if not data:
    raise BadData("empty_file", "0 bytes")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      img = Image.open(io.BytesIO(data))
      height, width = img.height, img.width
      if height == 0 or width == 0:
        raise BadData("empty_image", f"size {img.size}")
      transposed = img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
      if size_for is not None:
        th, tw = size_for(*((width, height) if transposed else (height, width)))
        if img.format == "JPEG":
          img.draft("RGB", (th, tw) if transposed else (tw, th))
      img.load()
      img = ImageOps.exif_transpose(img)
  except BadData:
    raise
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise BadData("too_large", str(e)) from None
  except Exception as e:  # noqa: BLE001 - PIL raises many types on bad files
    raise BadData("decode_error", f"{type(e).__name__}: {e}") from None
  if img.mode != "RGB":
    img = img.convert("RGB")  # RGBA drops alpha (no compositing), L/P/CMYK convert
  return img


def video_frames(record: dict, choose: Callable[[int, float], Sequence[int]]
                 ) -> tuple[list[np.ndarray], float]:
  """A "video" record -> (chosen frames as uint8 [H, W, 3] arrays, fps).

  Args:
    record: {"bytes": encoded file} (decoded with PyAV) or {"frames": uint8 [T, H, W, 3]}.
    choose: (num_frames, fps) -> sorted frame indices to keep; raises BadData when it cannot.
  """
  if record.get("kind") != "video":
    raise BadData("wrong_kind", f"expected a video record, got {record.get('kind')!r}")
  if "frames" in record:
    frames = np.asarray(record["frames"])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
      raise BadData("decode_error", f"frames must be uint8 [T, H, W, 3], got {frames.dtype} "
                    f"{frames.shape}")
    fps = float(record.get("fps", 30.0))
    return [frames[i] for i in _checked(choose(len(frames), fps), len(frames))], fps
  data = record.get("bytes", b"")
  if not data:
    raise BadData("empty_file", "0 bytes")
  import av  # pylint: disable=import-outside-toplevel

  try:
    with av.open(io.BytesIO(data)) as container:
      if not container.streams.video:
        raise BadData("decode_error", "no video stream")
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      fps = float(stream.average_rate or stream.guessed_rate or 30.0)
      total = int(stream.frames or 0)
      decoded = None
      if total <= 0:  # unknown length (e.g. webm): decode everything once to count
        decoded = list(container.decode(stream))
        total = len(decoded)
      indices = _checked(choose(total, fps), total)
      wanted, out = set(indices), {}
      source = decoded if decoded is not None else container.decode(stream)
      for i, frame in enumerate(source):
        if i in wanted:
          out[i] = frame.to_ndarray(format="rgb24")
        if i >= indices[-1]:
          break
  except BadData:
    raise
  except Exception as e:  # noqa: BLE001 - PyAV raises many types on bad files
    raise BadData("decode_error", f"{type(e).__name__}: {e}") from None
  if len(out) != len(indices):
    raise BadData("decode_error", f"truncated video: {len(out)} of {len(indices)} wanted frames "
                  f"decoded (header says {total})")
  return [out[i] for i in indices], fps


def _checked(indices: Sequence[int], total: int) -> list[int]:
  indices = [int(i) for i in indices]
  if not indices or min(indices) < 0 or max(indices) >= total or indices != sorted(indices):
    raise BadData("decode_error", f"bad frame selection for {total} frames")
  return indices


def voxel_asset(record: dict, num_views: int, seed: int) -> voxelize.VoxelAsset:
  """A "voxels" record -> `VoxelAsset`.

  Accepted forms: prepared {"coords", "src", "views" (PNG blobs), ...}; {"mesh_bytes", "ext"}
  (rendered here: slow, prefer `atoken data prepare`); {"nerf_dir"} (NeRF layout folder).
  """
  if record.get("kind") != "voxels":
    raise BadData("wrong_kind", f"expected a voxels record, got {record.get('kind')!r}")
  try:
    if "mesh_bytes" in record:
      try:
        v, f, vc, fc = assets3d.load_mesh(record["mesh_bytes"], record.get("ext", "glb"))
      except ValueError as e:
        raise BadData("no_faces" if "no faces" in str(e) else "decode_error", str(e)) from None
      return assets3d.mesh_to_asset(v, f, vc, fc, num_views=num_views, seed=seed)
    if "nerf_dir" in record:
      return assets3d.nerf_to_asset(record["nerf_dir"], seed=seed)
    coords, src = np.asarray(record["coords"]), np.asarray(record["src"])
    views = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
                      for b in record["views"]])
    if coords.ndim != 2 or coords.shape[1] != 3 or src.shape != coords.shape:
      raise BadData("decode_error", f"coords/src must be [N, 3], got {coords.shape} {src.shape}")
    return voxelize.VoxelAsset(coords=coords, src=src, views=views,
                               w2c=np.asarray(record.get("w2c", np.zeros((0, 4, 4)))),
                               fov_x=np.asarray(record.get("fov_x", np.zeros(0))))
  except BadData:
    raise
  except Exception as e:  # noqa: BLE001 - any malformed asset is bad data
    msg = f"{type(e).__name__}: {e}"
    raise BadData("no_voxels" if "no depth pixel" in msg else "decode_error", msg) from None
