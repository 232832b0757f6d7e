"""The perceptual resize weights of a packed batch (host, numpy), built by the data pipeline.

The perceptual terms (LPIPS, Gram, CLIP) and the SigLIP2 teacher see each image slot as one
picture resized to `size` x `size` (paper §4: 224). Images of different sizes share a static
canvas of `max_grid` x `max_grid` patches; the resize of each slot's real region is a pair of
antialiased bilinear matrices (as the position table's) that depend only on the slot's shape,
so they are computed here with the batch and the training step stays static
(`atoken_jax.train.perceptual_inputs` applies them).
"""
from __future__ import annotations

import numpy as np

from atoken_jax.batch import Batch
from atoken_jax.config import PATCH_HW
from atoken_jax.pos_interp import antialiased_bilinear_weights
from atoken_jax.tokens import MODALITY_IDS

IMAGE = MODALITY_IDS["image"]


def resize_weights(batch: Batch, size: int, max_grid: int) -> dict[str, np.ndarray]:
  """-> image_rows [B, S, size, max_grid*16], image_cols (same), image_valid [B, S] for every
  image slot of the batch (zeros / False elsewhere). ValueError when an image is larger than
  the canvas."""
  sample_index, modality = np.asarray(batch.sample_index), np.asarray(batch.modality)
  b, s = sample_index.shape
  canvas = max_grid * PATCH_HW
  rows = np.zeros((b, s, size, canvas), np.float32)
  cols = np.zeros((b, s, size, canvas), np.float32)
  valid = np.zeros((b, s), bool)
  for r, k in zip(*np.nonzero((sample_index >= 0) & (modality == IMAGE))):
    xy = batch.coords[r][batch.sample_ids[r] == k + 1][:, 1:3]
    h, w = (xy.max(0) + 1) * PATCH_HW
    if max(h, w) > canvas:
      raise ValueError(f"an image of {h}x{w} px exceeds the perceptual canvas of {canvas} px; "
                       "raise config.loss.perceptual_max_side")
    rows[r, k, :, :h] = antialiased_bilinear_weights(int(h), size)
    cols[r, k, :, :w] = antialiased_bilinear_weights(int(w), size)
    valid[r, k] = True
  return {"image_rows": rows, "image_cols": cols, "image_valid": valid}


def with_resize_weights(batch: Batch, size: int, max_side: int) -> Batch:
  """The batch with its perceptual resize weights for a `size`^2 view of images up to
  `max_side` px (a multiple of 16)."""
  if size < 1 or max_side < PATCH_HW or max_side % PATCH_HW:
    raise ValueError(f"perceptual size must be >= 1 and max_side a positive multiple of "
                     f"{PATCH_HW}, got {size}, {max_side}")
  return batch.replace(**resize_weights(batch, size, max_side // PATCH_HW))
