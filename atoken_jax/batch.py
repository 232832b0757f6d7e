"""The packed batch: one typed pytree from the packer to the model and the loss.

`Batch` is built on the host (numpy) by `atoken_jax.packing` — by the data pipeline for
training, by `Tokenizer` for the user path — and goes through `jax.device_put`, `jit` and the
loop's batch sharding as it is (a `flax.struct.dataclass`; every array leads with the row axis
B). This module is the one list of its fields; the field's `role` says who reads it:

  model  the autoencoder (`atoken_jax.model.atoken`); `MODEL_FIELDS`
  loss   only the training objective (`atoken_jax.train.objective`)
  host   only host code (unpacking, reports); `Batch.for_device` leaves them out

`packing` fills every field but the optional ones: `text_embedding` and the perceptual resize
weights (`perceptual_canvas`), None when absent. None is part of the pytree's structure, not a
shape, and a task's batches either always carry a field or never do, so each shape bucket
still compiles once. Only the first eight fields are required: a batch built for the model
alone (e.g. the teacher's, `train.perceptual_inputs.teacher_inputs`) leaves the rest None, as
do `for_device` and `for_model`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.struct
import jax
import numpy as np

from atoken_jax import attention_blocks

Array = Any  # numpy on the host, jax.Array on the device


def _field(role: str, default=dataclasses.MISSING):
  return flax.struct.field(metadata={"role": role}, default=default)


@flax.struct.dataclass
class Batch:
  """B rows of L token positions, at most S sample slots per row.

  Per token [B, L, ...] (padding: zeros, ids 0):
    patches [B, L, 3072] float32: 4 x 16 x 16 x RGB patches in [-1, 1]; [B, L, 768] (frame 0
      only) when every sample is single-frame (images, voxels: frames 1-3 are zero padding).
    coords [B, L, 4] int32: tile-local (t, x=row, y=col, z).
    segment_ids [B, L] int32: attention group 1, 2, ... per (sample, temporal tile) in the row;
      0 = padding. Tokens attend only within equal non-zero ids.
    sample_ids [B, L] int32: sample slot 1..S within the row; 0 = padding.
    tile_index [B, L] int32: rank of the token's temporal tile within its sample.
    pos_row_weights, pos_col_weights [B, L, 16] float32: the antialiased resize weights of the
      learned 16x16 position table for the token's (sample, tile) (`pos_interp`).
    token_index [B, L] int32 (host): position in its sample's TokenSeq; -1 at padding.
  Attention block table (`atoken_jax.attention_blocks`; shapes depend only on B and L):
    attn_pairs [B, C, G, 2] int32, attn_kv_counts [B, n_blocks] int32.
  Per slot [B, S, ...] (empty slot: -1 / 0 / False):
    sample_index [B, S] int32: the sample in each slot (its input index for `packing.pack`, its
      record id in the data pipeline); -1 empty. Its width S is the model's slot count.
    sample_lengths [B, S] int32 (host): tokens per slot.
    modality [B, S] int32 (loss): 0 image, 1 video, 2 voxels (`tokens.MODALITY_IDS`).
    task [B, S] int32 (loss): 0 reconstruction, 1 understanding (`tokens.TASK_IDS`).
    text_ids [B, S, T] int32 (loss): caption token ids, 0 = pad (T = 0 without captions).
    has_text [B, S] bool (loss): the slot has a caption.
    orig_shape [B, S, 3] int32 (host): (T, H, W) after crop; 0 for voxels and empty slots.
  Optional (None when absent):
    text_embedding [B, S, D] float32 (loss): precomputed caption embeddings.
    image_rows, image_cols [B, S, size, canvas] float32, image_valid [B, S] bool (loss): the
      resize of each image slot's frame 0 to the perceptual size (`perceptual_canvas`).
  """
  patches: Array = _field("model")
  coords: Array = _field("model")
  segment_ids: Array = _field("model")
  sample_ids: Array = _field("model")
  tile_index: Array = _field("model")
  pos_row_weights: Array = _field("model")
  pos_col_weights: Array = _field("model")
  sample_index: Array = _field("model")
  attn_pairs: Optional[Array] = _field("model", None)
  attn_kv_counts: Optional[Array] = _field("model", None)
  token_index: Optional[Array] = _field("host", None)
  sample_lengths: Optional[Array] = _field("host", None)
  orig_shape: Optional[Array] = _field("host", None)
  modality: Optional[Array] = _field("loss", None)
  task: Optional[Array] = _field("loss", None)
  text_ids: Optional[Array] = _field("loss", None)
  has_text: Optional[Array] = _field("loss", None)
  text_embedding: Optional[Array] = _field("loss", None)
  image_rows: Optional[Array] = _field("loss", None)
  image_cols: Optional[Array] = _field("loss", None)
  image_valid: Optional[Array] = _field("loss", None)

  @property
  def shape(self) -> tuple[int, int, int]:
    """(B, L, S)."""
    b, length = np.shape(self.segment_ids)
    return b, length, int(np.shape(self.sample_index)[1])

  @property
  def placed(self) -> np.ndarray:
    """[P] int: the `sample_index` values of the occupied slots, ascending (host)."""
    index = np.asarray(self.sample_index)
    return np.sort(index[index >= 0])

  def arrays(self) -> dict:
    """{field name: array} of the fields that are set (not None), in field order."""
    return {name: getattr(self, name) for name in FIELDS if getattr(self, name) is not None}

  def for_device(self) -> "Batch":
    """The batch without its host-only fields (what the training step receives)."""
    return self.replace(**{name: None for name in HOST_FIELDS})

  def for_model(self) -> "Batch":
    """Only the fields the model reads (what the user path's jitted functions receive)."""
    return self.replace(**{name: None for name in FIELDS if name not in MODEL_FIELDS})

  def mask_info(self) -> dict:
    """The per-token metadata the model's attention masks read, plus the block table when the
    batch has one (`atoken_jax.model.attention.split_table`)."""
    info = {name: getattr(self, name) for name in MASK_FIELDS}
    if self.attn_pairs is not None:
      info.update({name: getattr(self, name) for name in TABLE_FIELDS})
    return info


def _names(role: str) -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(Batch) if f.metadata["role"] == role)


FIELDS = tuple(f.name for f in dataclasses.fields(Batch))
MODEL_FIELDS = _names("model")
HOST_FIELDS = _names("host")
LOSS_FIELDS = _names("loss")
TABLE_FIELDS = attention_blocks.TABLE_KEYS  # the block table's arrays, named as its keys
MASK_FIELDS = ("segment_ids", "sample_ids", "tile_index", "coords")


def for_device(tree):
  """A host batch — a `Batch`, or a pytree holding some (e.g. a 3D task's views + tokens) —
  with every `Batch` in it reduced to `Batch.for_device`: what the training step receives."""
  return jax.tree.map(lambda x: x.for_device() if isinstance(x, Batch) else x, tree,
                      is_leaf=lambda x: isinstance(x, Batch))
