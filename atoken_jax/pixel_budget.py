"""A pixel budget for inputs whose size the user chose (`atoken tokenize`, eval's native protocols).

Training bounds every frame by its data config (longer side <= max_side, <= row_len tokens; see
`data_pipelines.transforms`). Tokenize and eval take files as they are, so a 6000 x 4000 photo
would ask the accelerator for hundreds of GB. Frames (images, or each video frame) over
`max_pixels` are either resized, preserving the aspect ratio, to the largest multiples of 16
that fit (one line on stderr says so), or refused with a `ValueError` naming the limit.
"""
from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
from PIL import Image

from atoken_jax.config import PATCH_HW

DEFAULT_MAX_PIXELS = 1024 * 1024  # 4096 patches of 16 x 16: fits a laptop with the so400m model
ON_OVERSIZE = ("resize", "refuse")


def fit(height: int, width: int, max_pixels: int) -> tuple[int, int]:
  """The largest (h, w), multiples of 16 with h * w <= max_pixels, of the aspect height:width
  (a side that would drop below 16 stays 16, and the other side shrinks to fit)."""
  scale = math.sqrt(max_pixels / (height * width))
  h = int(height * scale) // PATCH_HW * PATCH_HW
  w = int(width * scale) // PATCH_HW * PATCH_HW
  longest = max(PATCH_HW, max_pixels // PATCH_HW // PATCH_HW * PATCH_HW)
  if h < PATCH_HW:
    h, w = PATCH_HW, min(w, longest)
  if w < PATCH_HW:
    h, w = min(h, longest), PATCH_HW
  return h, w


class OverBudget(ValueError):
  """A frame over the budget with on_oversize="refuse"."""


@dataclasses.dataclass
class PixelBudget:
  """max_pixels per frame (0 = no limit); on_oversize "resize" or "refuse".

  `resized` lists the names of the inputs that were resized (for reports)."""
  max_pixels: int = DEFAULT_MAX_PIXELS
  on_oversize: str = "resize"
  resized: list = dataclasses.field(default_factory=list)

  def __post_init__(self):
    if self.on_oversize not in ON_OVERSIZE:
      raise ValueError(f"on_oversize must be one of {ON_OVERSIZE}, got {self.on_oversize!r}")
    self.max_pixels = int(self.max_pixels)
    if self.max_pixels < 0 or 0 < self.max_pixels < PATCH_HW * PATCH_HW:
      raise ValueError(f"max_pixels must be 0 (no limit) or at least {PATCH_HW * PATCH_HW}, "
                       f"got {self.max_pixels}")

  @classmethod
  def from_config(cls, cfg) -> "PixelBudget":
    """From a config section's optional `max_pixels` / `on_oversize` keys."""
    return cls(int(cfg.get("max_pixels", DEFAULT_MAX_PIXELS)),
               str(cfg.get("on_oversize", "resize")))

  def size_for(self, height: int, width: int) -> tuple[int, int]:
    """The size a resize would give (never refuses): a decoder's `size_for` hint."""
    if not self.max_pixels or height * width <= self.max_pixels:
      return height, width
    return fit(height, width, self.max_pixels)

  def target(self, height: int, width: int, name: str) -> tuple[int, int]:
    """(height, width) a frame of that size becomes; raises ValueError when refusing."""
    if not self.max_pixels or height * width <= self.max_pixels:
      return height, width
    if self.on_oversize == "refuse":
      raise OverBudget(f"{name}: {width}x{height} = {height * width} pixels is over the pixel "
                       f"budget of {self.max_pixels} (raise --max-pixels / max_pixels, or "
                       "resize with on_oversize=resize)")
    return fit(height, width, self.max_pixels)

  def image(self, img: Image.Image, name: str, stored: tuple[int, int] | None = None
            ) -> Image.Image:
    """A PIL image within the budget (the same object when it already fits). `stored`: the
    file's own (height, width) when the decoder already reduced it (JPEG draft mode)."""
    height, width = stored or (img.height, img.width)
    h, w = self.target(height, width, name)
    if (h, w) == (img.height, img.width):
      return img
    self._note(name, height, width, h, w)
    return img.resize((w, h), Image.BICUBIC, reducing_gap=3.0)

  def frames(self, video: np.ndarray, name: str) -> np.ndarray:
    """uint8 frames [T, H, W, 3] within the budget (each resized alike)."""
    height, width = video.shape[1:3]
    h, w = self.target(height, width, name)
    if (h, w) == (height, width):
      return video
    self._note(name, height, width, h, w)
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC,
                                                          reducing_gap=3.0)) for f in video])

  def notes(self) -> list[str]:
    if not self.resized:
      return []
    return [f"{len(self.resized)} inputs over the pixel budget ({self.max_pixels} per frame) "
            "were resized"]

  def _note(self, name: str, height: int, width: int, h: int, w: int) -> None:
    self.resized.append(name)
    print(f"{name}: {width}x{height} is over the pixel budget of {self.max_pixels}; resized to "
          f"{w}x{h}", file=sys.stderr)
