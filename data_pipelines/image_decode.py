"""Image files -> upright 8-bit RGB, right for the files users have.

Every picture the project reads (training records, `atoken data prepare`, `atoken tokenize`,
evaluation, NeRF renders, animated GIF/WebP frames) goes through `open_upright` and `to_rgb`:

  EXIF orientation   applied, so the picture is upright as a viewer shows it;
  16-bit ("I;16*")   greyscale PNG/TIFF scaled 0..65535 -> 0..255 (round(v / 257)), not clipped;
  32-bit int ("I")   read as 16-bit values (0..65535, clipped);
  float ("F")        TIFF in [0, 1] -> 0..255 (outside clipped, NaN -> 0); float RGB(A) TIFFs,
                     which Pillow cannot read, through tifffile (a scikit-image dependency);
  palette ("P")      expanded; with transparency treated like alpha;
  alpha (LA, RGBA, PA, P+transparency)  composited over `background` (white by default: the
                     picture as shown on a page; colours hidden under alpha 0 never leak);
  CMYK JPEG          converted by Pillow (Adobe-inverted files included); embedded ICC profiles
                     are not applied;
  1, L, RGBX, YCbCr  converted by Pillow.
16-bit RGB(A) PNG / TIFF: Pillow rounds each channel to 8 bits.
"""
from __future__ import annotations

import io
import warnings
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageOps

from data_pipelines import decoded_cache

_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA = ("RGBA", "LA", "PA", "La", "RGBa")


class ImageDecodeError(ValueError):
  """A file that is not a readable picture; `reason` names the kind of failure."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def is_animated(source: bytes | str) -> bool:
  """Whether a file (bytes or a path) is a GIF or WebP with more than one frame.

  Reads the header and at most the first frame; an unreadable file is "not animated" (its
  decoding reports the problem later).
  """
  try:
    if isinstance(source, str):
      with open(source, "rb") as fh:
        head = fh.read(12)
    else:
      head = bytes(source[:12])
    if not (head[:6] in (b"GIF87a", b"GIF89a") or (head[:4] == b"RIFF" and head[8:] == b"WEBP")):
      return False
    with Image.open(source if isinstance(source, str) else io.BytesIO(source)) as img:
      return bool(getattr(img, "is_animated", False))
  except Exception:  # noqa: BLE001 - unreadable: decoding reports it later
    return False


def open_upright(data: bytes, size_for: Optional[Callable[[int, int], tuple]] = None,
                 cache: Optional[decoded_cache.DecodedCache] = None) -> Image.Image:
  """Encoded bytes -> loaded PIL image, EXIF orientation applied (any mode; see `to_rgb`).

  Args:
    data: the file's bytes.
    size_for: optional (height, width) -> (target height, target width), called with the
      upright size from the header before the pixels are decoded; a JPEG is then decoded at the
      smallest power-of-two DCT reduction that still covers the target.
    cache: optional `decoded_cache.DecodedCache` to read the decoded picture from, or add it
      to (keyed by the file's digest and the size it decodes at: a JPEG's DCT reduction).

  Raises:
    ImageDecodeError: reason "empty_file", "empty_image", "too_large" (decompression bomb)
      or "decode_error".
  """
  if not data:
    raise ImageDecodeError("empty_file", "0 bytes")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      img = Image.open(io.BytesIO(data))
      height, width = img.height, img.width
      if height == 0 or width == 0:
        raise ImageDecodeError("empty_image", f"size {img.size}")
      digest = decoded_cache.digest(data) if cache is not None else b""
      if cache is not None and img.format != "JPEG":  # one decoded size: look before decoding
        hit = cache.get((digest, None))               # (a PNG's EXIF sits after its pixels)
        if hit is not None:
          if size_for is not None:
            size_for(*hit[0])
          return hit[1]
      transposed = img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
      header_hw = (width, height) if transposed else (height, width)
      if size_for is not None:
        th, tw = size_for(*header_hw)
        if img.format == "JPEG":
          img.draft("RGB", (th, tw) if transposed else (tw, th))
      key = (digest, img.size if img.format == "JPEG" else None)
      if cache is not None and img.format == "JPEG":
        hit = cache.get(key)
        if hit is not None:
          return hit[1]
      img.load()
      img = ImageOps.exif_transpose(img)
      if cache is not None:
        cache.put(key, (header_hw, img), img.width * img.height * len(img.getbands()))
      return img
  except ImageDecodeError:
    raise
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise ImageDecodeError("too_large", str(e)) from None
  except Image.UnidentifiedImageError as e:
    if data[:4] in (b"II*\x00", b"MM\x00*"):  # e.g. float RGB: Pillow reads single-channel only
      return _tiff_with_tifffile(data, size_for)
    raise ImageDecodeError("decode_error", f"{type(e).__name__}: {e}") from None
  except Exception as e:  # noqa: BLE001 - PIL raises many types on bad files
    raise ImageDecodeError("decode_error", f"{type(e).__name__}: {e}") from None


def _tiff_with_tifffile(data: bytes, size_for) -> Image.Image:
  """A TIFF Pillow cannot read (float / multi-sample layouts) -> 8-bit RGB(A) via tifffile.

  Floats are taken in [0, 1], unsigned integers over their full range.
  """
  try:
    import tifffile  # pylint: disable=import-outside-toplevel
    x = np.asarray(tifffile.imread(io.BytesIO(data)))
  except Exception as e:  # noqa: BLE001 - not a TIFF either reader understands
    raise ImageDecodeError("decode_error", f"unreadable TIFF: {type(e).__name__}: {e}"
                           ) from None
  if x.ndim == 3 and x.shape[0] in (3, 4) and x.shape[-1] not in (3, 4):
    x = np.moveaxis(x, 0, -1)  # planar samples
  if x.ndim == 3 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[-1] not in (3, 4)) or 0 in x.shape:
    raise ImageDecodeError("decode_error", f"TIFF of shape {x.shape}: not a picture")
  if np.issubdtype(x.dtype, np.floating):
    unit = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
  elif np.issubdtype(x.dtype, np.unsignedinteger) or x.dtype == np.bool_:
    unit = x.astype(np.float32) / float(np.iinfo(x.dtype).max if x.dtype != np.bool_ else 1)
  else:
    raise ImageDecodeError("decode_error", f"TIFF samples of type {x.dtype}")
  if size_for is not None:
    size_for(x.shape[0], x.shape[1])
  u8 = np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)
  return Image.fromarray(u8 if x.ndim == 3 else np.repeat(u8[..., None], 3, axis=2))


def _grey_to_rgb(unit: np.ndarray) -> Image.Image:
  """float [H, W] in [0, 1] -> RGB image."""
  u8 = np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)
  return Image.fromarray(np.repeat(u8[..., None], 3, axis=2))


def to_rgb(img: Image.Image, background: int = 255) -> Image.Image:
  """Any PIL image -> 8-bit "RGB" PIL image (the conversions in the module docstring)."""
  mode = img.mode
  if mode == "RGB":
    return img
  if mode in _SIXTEEN_BIT:
    return _grey_to_rgb(np.asarray(img).astype(np.float32) / 65535.0)
  if mode == "F":
    return _grey_to_rgb(np.nan_to_num(np.asarray(img, np.float32), nan=0.0, posinf=1.0,
                                      neginf=0.0))
  if mode in ("P", "PA"):
    img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
  elif mode in _ALPHA:
    img = img.convert("RGBA")
  elif mode == "L" and "transparency" in img.info:
    img = img.convert("RGBA")
  if img.mode == "RGBA":
    out = Image.new("RGB", img.size, (background,) * 3)
    out.paste(img.convert("RGB"), mask=img.getchannel("A"))
    return out
  return img if img.mode == "RGB" else img.convert("RGB")


def decode_rgb(data: bytes, size_for: Optional[Callable[[int, int], tuple]] = None,
               background: int = 255, cache: Optional[decoded_cache.DecodedCache] = None
               ) -> Image.Image:
  """Encoded bytes -> upright 8-bit RGB PIL image (`open_upright` then `to_rgb`)."""
  img = open_upright(data, size_for, cache)
  try:
    return to_rgb(img, background)
  except Exception as e:  # noqa: BLE001 - an unconvertible mode is a bad file
    raise ImageDecodeError("decode_error", f"mode {img.mode}: {type(e).__name__}: {e}") from None


def read_rgb_file(path: str, background: int = 255) -> Image.Image:
  """A picture file -> upright 8-bit RGB PIL image. Raises ImageDecodeError or OSError."""
  with open(path, "rb") as fh:
    data = fh.read()
  try:
    return decode_rgb(data, background=background)
  except ImageDecodeError as e:
    raise ImageDecodeError(e.reason, f"{path}: {e}") from None
