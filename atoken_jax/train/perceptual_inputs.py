"""Whole images from packed tokens, for the perceptual terms and the SigLIP2 teacher.

Perceptual losses (LPIPS, Gram, CLIP) and the teacher see each image slot as one picture resized
to `size` x `size` (paper §4: 224). Images of different sizes share a static canvas of
`max_grid` x `max_grid` patches; the resize of each slot's real region is a pair of matrices
that the data pipeline puts in the batch (`atoken_jax.perceptual_canvas`; `data_canvas` tells
it the canvas), so the step itself stays static.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from atoken_jax import config as config_lib
from atoken_jax.batch import Batch
from atoken_jax.pos_interp import position_weights
from atoken_jax.train import frozen

P = config_lib.PATCH_HW


def needs_canvas(loss_cfg) -> bool:
  """Whether image batches need resize weights: a perceptual term (LPIPS, Gram) or the SigLIP2
  teacher (CLIP-perceptual, distillation) is on (the networks `frozen.load` loads)."""
  return frozen.uses_lpips(loss_cfg) or frozen.uses_teacher(loss_cfg)


def data_canvas(loss_cfg, data_cfg: ml_collections.ConfigDict,
                modality: str) -> ml_collections.ConfigDict:
  """The data config of a task of `modality` with `perceptual.size` / `.max_side` set from the
  loss config when the objective needs the resize weights of its images (else `data_cfg`
  itself); the data pipeline then builds them into every batch (`perceptual_canvas`)."""
  if modality != "image" or not needs_canvas(loss_cfg):
    return data_cfg
  out = data_cfg.copy_and_resolve_references()
  with out.unlocked():
    out.perceptual = ml_collections.ConfigDict(dict(
        size=int(loss_cfg.perceptual_size), max_side=int(loss_cfg.perceptual_max_side)))
  return out


def slot_images(patches: jax.Array, coords: jax.Array, sample_ids: jax.Array, num_slots: int,
                max_grid: int) -> jax.Array:
  """Frame 0 of each token scattered to its slot's canvas: [B, S, G*16, G*16, 3]."""
  b, l, _ = patches.shape
  frame0 = patches[..., :config_lib.FRAME_PATCH_DIM].reshape(b, l, P, P, 3)
  slot = jnp.where(sample_ids > 0, sample_ids - 1, num_slots)  # padding -> dropped
  x = jnp.clip(coords[..., 1], 0, max_grid - 1)
  y = jnp.clip(coords[..., 2], 0, max_grid - 1)
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], (b, l))
  canvas = jnp.zeros((b, num_slots, max_grid, max_grid, P, P, 3), patches.dtype)
  canvas = canvas.at[rows, slot, x, y].set(frame0, mode="drop")
  return canvas.transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, num_slots, max_grid * P,
                                                       max_grid * P, 3)


def resize(images: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
  """[B,S,Hc,Wc,3] with per-slot [B,S,size,Hc] / [B,S,size,Wc] -> [B,S,size,size,3]."""
  tmp = jnp.einsum("bsoh,bshwc->bsowc", rows, images.astype(jnp.float32))
  return jnp.einsum("bspw,bsowc->bsopc", cols, tmp)


def teacher_inputs(images: jax.Array) -> Batch:
  """[N, size, size, 3] -> a packed batch (one image per row) for a SigLIP2-shaped encoder."""
  n, size = images.shape[0], images.shape[1]
  g = size // P
  # frame 0 only (768 wide): the encoder reads no zero frames (`atoken.patch_width`)
  patches = images.reshape(n, g, P, g, P, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, g * g, -1)
  coords = np.stack(np.meshgrid(np.arange(g), np.arange(g), indexing="ij"), -1).reshape(-1, 2)
  coords = np.concatenate([np.zeros((g * g, 1)), coords, np.zeros((g * g, 1))], 1)
  row_w, col_w = position_weights(coords.astype(np.int32))
  tile = lambda a: jnp.broadcast_to(jnp.asarray(a), (n,) + a.shape)
  ones = jnp.ones((n, g * g), jnp.int32)
  return Batch(patches=patches, coords=tile(coords.astype(np.int32)), segment_ids=ones,
               sample_ids=ones, tile_index=0 * ones, pos_row_weights=tile(row_w),
               pos_col_weights=tile(col_w), sample_index=jnp.zeros((n, 1), jnp.int32))
