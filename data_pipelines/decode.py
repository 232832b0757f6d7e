"""Decoding: record fields -> PIL images, selected video frames, voxel sets.

The one place records are decoded (training, `atoken data prepare`, `atoken tokenize`,
evaluation); files go through `image_decode` (pictures) and `video_decode` (videos, animated
GIF/WebP), which say what is read and how.

Every failure raises `BadData(reason, message)`; the sample stage turns it into a counted skip.
Reasons used here: "decode_error" (unreadable / corrupt / truncated file), "empty_file"
(0 bytes), "empty_image" (zero-size picture), "too_few_frames" (a video with fewer than 4
frames), "no_faces" (a mesh without triangles), "no_voxels" (a 3D asset with nothing inside the
grid), "wrong_kind" (a record of another modality), "too_large" (a decompression bomb).
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

from data_pipelines import assets3d, decoded_cache, image_decode, video_decode, voxelize


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


def decode_image(record: dict, size_for: Optional[Callable[[int, int], tuple]] = None,
                 cache: Optional[decoded_cache.DecodedCache] = None) -> Image.Image:
  """An "image" record ({"bytes"} encoded file, or {"pixels"} uint8 array) -> RGB PIL image.

  Encoded files go through `image_decode.decode_rgb` (16-bit / float / palette / alpha / CMYK /
  EXIF orientation handled as its docstring says).

  Args:
    record: the record dict.
    size_for: optional (height, width) -> (target height, target width), called with the
      upright size read from the file header before the pixels are decoded; a JPEG is then
      decoded at the smallest power-of-two reduction that still covers the target (DCT
      scaling: much faster for large photos, same result after the resize that follows).
    cache: optional `decoded_cache.DecodedCache` of decoded files (encoded records only).
  """
  if record.get("kind") != "image":
    raise BadData("wrong_kind", f"expected an image record, got {record.get('kind')!r}")
  if "pixels" in record:
    img = _pil_from_array(record["pixels"])
    if img.width == 0 or img.height == 0:
      raise BadData("empty_image", f"size {img.size}")
    if size_for is not None:
      size_for(img.height, img.width)
    return image_decode.to_rgb(img)
  try:
    return image_decode.decode_rgb(record.get("bytes", b""), size_for, cache=cache)
  except image_decode.ImageDecodeError as e:
    raise BadData(e.reason, str(e)) from None


def decode_png_views(blobs: Sequence[bytes]) -> np.ndarray:
  """Stored PNG views -> uint8 [V, H, W, 3] (alpha over black, like our renders)."""
  try:
    return np.stack([np.asarray(image_decode.decode_rgb(b, background=0)) for b in blobs])
  except image_decode.ImageDecodeError as e:
    raise BadData(e.reason, f"view: {e}") from None


def video_frames(record: dict, choose: Callable[[int, float], Sequence[int]],
                 cache: Optional[decoded_cache.DecodedCache] = None
                 ) -> tuple[list[np.ndarray], float]:
  """A "video" record -> (frames at the chosen timeline ticks as uint8 [H, W, 3], fps).

  Encoded files (any PyAV format; animated GIF/WebP through Pillow) are read on a
  constant-rate timeline by timestamp, so variable-frame-rate files are sampled by time (see
  `video_decode`); arrays are taken as constant-rate.

  Args:
    record: {"bytes": encoded file} or {"frames": uint8 [T, H, W, 3], "fps"}.
    choose: (number of ticks, fps) -> sorted tick indices to keep; raises BadData when it
      cannot. For a constant-rate video ticks are frames.
    cache: optional `decoded_cache.DecodedCache`: an encoded file is decoded whole once (every
      tick) and later reads select from it. A file that does not decode whole (e.g. truncated)
      is decoded per read as without a cache, so the result never differs.
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
  if cache is not None and data:
    key = ("video", decoded_cache.digest(data))
    whole = cache.get(key)
    if whole is None:
      try:
        frames, fps = video_decode.decode_frames(data, lambda total, fps: range(total))
        whole = (np.stack(frames), fps)
      except (video_decode.VideoDecodeError, ValueError):
        whole = False  # not decodable whole: per read below, exactly as without a cache
      cache.put(key, whole, whole[0].nbytes if whole else 0)
    if whole:
      frames, fps = whole
      return [frames[i] for i in _checked(choose(len(frames), fps), len(frames))], fps
  try:
    return video_decode.decode_frames(data, choose)
  except video_decode.VideoDecodeError as e:
    raise BadData(e.reason, str(e)) from None


def read_media_file(path: str) -> np.ndarray:
  """An image or video file -> uint8 [H, W, 3], or every timeline frame [T, H, W, 3].

  The modality comes from `folder_source.modality_of` (animated GIF/WebP are videos).

  Raises:
    ValueError: one line naming the file (missing, unsupported type, cannot be decoded).
  """
  from data_pipelines import folder_source  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise ValueError(f"{path}: no such file")
  modality = folder_source.modality_of(path)
  if modality not in ("image", "video"):
    raise ValueError(f"{path}: unsupported file type {os.path.splitext(path)[1].lower()!r} "
                     "(images: "
                     f"{' '.join(folder_source.IMAGE_EXTS)}; videos: "
                     f"{' '.join(folder_source.VIDEO_EXTS)}, animated .gif .webp)")
  with open(path, "rb") as fh:
    record = {"kind": modality, "bytes": fh.read()}
  try:
    if modality == "image":
      return np.asarray(decode_image(record))
    frames, _ = video_frames(record, lambda total, fps: range(total))
    return np.stack(frames)
  except BadData as e:
    raise ValueError(f"{path}: cannot decode ({e})") from None


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
    views = decode_png_views(record["views"])
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
