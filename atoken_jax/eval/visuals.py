"""Pictures of a reconstruction evaluation: image grids (PNG) and side-by-side videos (mp4 / GIF).

Grids: one column per example, originals on the top row and reconstructions below, 4-pixel
white gutters; examples of different sizes are padded to the largest (black).
Videos: original | reconstruction side by side (same gutter), written with PyAV (H.264, or
MPEG-4 where the FFmpeg build lacks x264) or Pillow (GIF).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

GUTTER_PX = 4


def _pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
  out = np.zeros((h, w, 3), np.uint8)
  out[:x.shape[0], :x.shape[1]] = x
  return out


def image_grid(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
  """[(original, reconstruction) uint8 [H, W, 3]] → uint8 grid [2H + 3g, K (W + g) + g, 3]."""
  if not pairs:
    raise ValueError("image_grid needs at least one pair")
  h = max(max(a.shape[0], b.shape[0]) for a, b in pairs)
  w = max(max(a.shape[1], b.shape[1]) for a, b in pairs)
  g = GUTTER_PX
  grid = np.full((2 * h + 3 * g, len(pairs) * (w + g) + g, 3), 255, np.uint8)
  for k, (a, b) in enumerate(pairs):
    x = g + k * (w + g)
    grid[g:g + h, x:x + w] = _pad_to(a, h, w)
    grid[2 * g + h:2 * g + 2 * h, x:x + w] = _pad_to(b, h, w)
  return grid


def side_by_side(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
  """uint8 videos [T, H, W, 3] (same T) → [T, H, 2W + g, 3], original on the left."""
  t = min(len(original), len(reconstruction))
  h = max(original.shape[1], reconstruction.shape[1])
  w = max(original.shape[2], reconstruction.shape[2])
  out = np.full((t, h, 2 * w + GUTTER_PX, 3), 255, np.uint8)
  for i in range(t):
    out[i, :, :w] = _pad_to(original[i], h, w)
    out[i, :, w + GUTTER_PX:] = _pad_to(reconstruction[i], h, w)
  return out


def write_grid(pairs, path: str) -> str:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  Image.fromarray(image_grid(pairs)).save(path)
  return path


def write_side_by_side(original: np.ndarray, reconstruction: np.ndarray, path: str,
                       fps: int = 8) -> str:
  """Writes the side-by-side video; the suffix (.mp4 / .gif) picks the format."""
  from atoken_jax.media import write_video  # pylint: disable=import-outside-toplevel
  frames = side_by_side(original, reconstruction)
  h, w = frames.shape[1:3]
  if path.endswith(".mp4") and (h % 2 or w % 2):  # yuv420p needs even sides
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  write_video(frames, path, fps=fps)
  return path
