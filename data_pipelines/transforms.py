"""Per-modality random transforms, from a task config's `image` / `video` sections.

Resolution (paper §3.4 "random-resolution rescaling between the min and max resolution, plus
random crop"): the longer side after resizing is drawn uniformly from [min_side, max_side]
(capped at the source's own side when allow_upscale is False); the shorter side keeps the
aspect ratio but never drops below 16 px; when `max_tokens` is given the scale is reduced until
one frame holds at most that many 16 x 16 patches. Then a random crop to multiples of 16 and an
optional horizontal flip.

Frames: reconstruction draws a stride from `strides` among those that still give >= 4 frames,
takes up to `max_frames` frames from a random start and truncates to a multiple of 4;
understanding samples at `fps` frames per second from t = 0 (up to `max_frames`), again
truncated to a multiple of 4, falling back to 4 evenly spaced frames for clips shorter than
4 seconds. A video with fewer than 4 frames is bad data ("too_few_frames").
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from PIL import Image

from atoken_jax.config import PATCH_HW, PATCH_T
from data_pipelines.decode import BadData


def resize_target(rng: np.random.Generator, height: int, width: int, min_side: int,
                  max_side: int, allow_upscale: bool = True,
                  max_tokens: Optional[int] = None) -> tuple[int, int]:
  """Draws the (height, width) in pixels to resize a height x width frame to."""
  longer, shorter = max(height, width), min(height, width)
  side = int(rng.integers(min_side, max_side + 1))
  if not allow_upscale:
    side = min(side, longer)
  scale = max(side / longer, PATCH_HW / shorter)
  while True:
    h, w = max(PATCH_HW, round(height * scale)), max(PATCH_HW, round(width * scale))
    tokens = (h // PATCH_HW) * (w // PATCH_HW)
    if not max_tokens or tokens <= max_tokens or min(h, w) <= PATCH_HW:
      return h, w
    scale *= min(math.sqrt(max_tokens / tokens), 0.99)


def random_crop_box(rng: np.random.Generator, height: int, width: int
                    ) -> tuple[int, int, int, int]:
  """(top, left, h16, w16): a random crop of the largest multiples of 16 that fit."""
  h16, w16 = height // PATCH_HW * PATCH_HW, width // PATCH_HW * PATCH_HW
  top = int(rng.integers(0, height - h16 + 1))
  left = int(rng.integers(0, width - w16 + 1))
  return top, left, h16, w16


class FrameTransform:
  """Resize + crop + flip drawn once per sample and applied to each of its frames."""

  def __init__(self, rng: np.random.Generator, height: int, width: int, cfg,
               max_tokens: Optional[int] = None):
    self.size = resize_target(rng, height, width, cfg.min_side, cfg.max_side,
                              cfg.allow_upscale, max_tokens)
    self.box = random_crop_box(rng, *self.size)
    self.flip = bool(cfg.hflip) and bool(rng.random() < 0.5)

  @property
  def out_hw(self) -> tuple[int, int]:
    return self.box[2], self.box[3]

  def __call__(self, frame) -> np.ndarray:
    """PIL image or uint8 [H, W, 3] -> float32 [h16, w16, 3] in [-1, 1]."""
    img = frame if isinstance(frame, Image.Image) else Image.fromarray(frame)
    h, w = self.size
    if (img.height, img.width) != (h, w):
      img = img.resize((w, h), Image.BICUBIC, reducing_gap=3.0)  # antialiased when shrinking
    top, left, h16, w16 = self.box
    x = np.asarray(img, np.float32)[top:top + h16, left:left + w16]
    if self.flip:
      x = x[:, ::-1]
    x = x * np.float32(1 / 127.5) - np.float32(1.0)
    return np.clip(x, -1.0, 1.0)


def stride_frame_indices(rng: np.random.Generator, total: int, strides, max_frames: int
                         ) -> np.ndarray:
  """Reconstruction clip: indices [n] int64, n a multiple of 4, constant stride."""
  if total < PATCH_T:
    raise BadData("too_few_frames", f"{total} frames (need {PATCH_T})")
  usable = [int(s) for s in strides if (total - 1) // int(s) + 1 >= PATCH_T] or [1]
  stride = usable[int(rng.integers(len(usable)))]
  n = min(max_frames, (total - 1) // stride + 1) // PATCH_T * PATCH_T
  n = max(n, PATCH_T)
  start = int(rng.integers(0, total - (n - 1) * stride))
  return start + stride * np.arange(n)


def fps_frame_indices(total: int, video_fps: float, fps: float, max_frames: int) -> np.ndarray:
  """Understanding clip: frames at `fps` per second from t = 0; n a multiple of 4."""
  if total < PATCH_T:
    raise BadData("too_few_frames", f"{total} frames (need {PATCH_T})")
  step = max(video_fps, 1e-6) / fps  # source frames per sampled frame
  n = min(max_frames, int((total - 1) // step) + 1)
  if n < PATCH_T:  # shorter than 4 seconds: 4 frames spread over the clip
    return np.round(np.linspace(0, total - 1, PATCH_T)).astype(np.int64)
  n = n // PATCH_T * PATCH_T
  return np.minimum(np.round(np.arange(n) * step).astype(np.int64), total - 1)
