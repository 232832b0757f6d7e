"""Static-shape packed batches: variable-size samples in fixed-capacity rows (host, numpy).

Each sample (a `TokenSeq`) is cut into temporal tiles, tile = t // tile_latent_frames, with
tile-local t = t % tile_latent_frames (spec §1.4). Every (sample, tile) is one attention group
with its own position-table weights (spec §2.3); all tiles of a sample sit contiguously in one
row, because the semantic pooling head and the bottleneck see the whole sample.

Rows are filled first-fit in input order (deterministic): a sample goes to the first row with
enough free tokens and a free sample slot. Inside a row, slots and tokens follow placement order
and TokenSeq order, with padding only at the end of the row. Because every attention group is
contiguous, the packer also lists the attention blocks that share a group
(`atoken_jax.attention_blocks`), so the model computes only those. The result is an
`atoken_jax.batch.Batch`; per-slot labels (task, caption, record id) come from `SlotLabels`.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from atoken_jax import attention_blocks
from atoken_jax.batch import Batch
from atoken_jax.config import FRAME_PATCH_DIM, PATCH_DIM, POS_GRID
from atoken_jax.pos_interp import antialiased_bilinear_weights
from atoken_jax.tokens import MODALITY_IDS, TASK_IDS, TokenSeq


@dataclasses.dataclass(frozen=True, eq=False)
class SlotLabels:
  """What a sample's slot carries besides its tokens (the data pipeline's annotations).

  task: `tokens.TASK_IDS` code; modality: `tokens.MODALITY_IDS` code (None = the TokenSeq's
  kind); text_ids: [<= text_len] int caption ids (None = no caption); orig_shape: (T, H, W)
  after crop; record_id: the slot's `sample_index` (None = the sample's input index).
  """
  task: int = TASK_IDS["reconstruction"]
  modality: Optional[int] = None
  text_ids: Optional[np.ndarray] = None
  has_text: bool = False
  orig_shape: tuple = (0, 0, 0)
  record_id: Optional[int] = None


# --------------------------------------------------------------------------- per sample


def tile_layout(coords: np.ndarray, tile_latent_frames: int = 4):
  """Temporal tiles of one sample and their position-table weights.

  Args:
    coords: [n, 4] int (t, x, y, z) with t >= 0.
    tile_latent_frames: tile length in latent frames.

  Returns:
    tile_rank [n] int32 (0, 1, ... over the sample's occupied tiles in t order),
    local_coords [n, 4] int32 (t % tile_latent_frames, x, y, z),
    row_w [n, 16], col_w [n, 16] float32: `position_weights` of each token's tile, computed
    once per tile (H', W' = max row / col + 1 within the tile).
  """
  coords = np.asarray(coords)
  if coords.ndim != 2 or coords.shape[1] != 4 or len(coords) == 0:
    raise ValueError(f"coords must be [n >= 1, 4], got shape {coords.shape}")
  if coords.min() < 0:
    raise ValueError("coords must be non-negative")
  tiles, rank = np.unique(coords[:, 0] // tile_latent_frames, return_inverse=True)
  rank = rank.reshape(-1)
  local = coords.astype(np.int32)
  local[:, 0] -= (tiles[rank] * tile_latent_frames).astype(np.int32)
  weights = []
  for axis in (1, 2):  # rows, then columns
    extent = np.zeros(len(tiles), np.int64)
    np.maximum.at(extent, rank, coords[:, axis])
    tables = [antialiased_bilinear_weights(POS_GRID, int(e) + 1) for e in extent]
    offsets = np.concatenate([[0], np.cumsum(extent + 1)[:-1]])
    weights.append(np.concatenate(tables)[offsets[rank] + coords[:, axis]])
  return rank.astype(np.int32), local, weights[0], weights[1]


# --------------------------------------------------------------------------- first fit


def _first_fit(lengths: np.ndarray, row_len: int, max_samples_per_row: int,
               num_rows: Optional[int]) -> tuple[np.ndarray, np.ndarray, int]:
  """Returns row [N] (-1 = did not fit), slot [N] and the number of rows used."""
  capacity_rows = len(lengths) if num_rows is None else num_rows
  free = np.full(capacity_rows, row_len, np.int64)
  used = np.zeros(capacity_rows, np.int64)
  row = np.full(len(lengths), -1, np.int64)
  slot = np.full(len(lengths), -1, np.int64)
  for i, n in enumerate(lengths):
    fits = (free >= n) & (used < max_samples_per_row)
    r = int(np.argmax(fits)) if capacity_rows else 0
    if capacity_rows and fits[r]:
      row[i], slot[i] = r, used[r]
      free[r] -= n
      used[r] += 1
  rows_used = capacity_rows if num_rows is not None else int(row.max(initial=-1)) + 1
  return row, slot, rows_used


def _check_inputs(seqs, row_len, max_samples_per_row, tile_latent_frames) -> np.ndarray:
  if row_len < 1 or max_samples_per_row < 1 or tile_latent_frames < 1:
    raise ValueError(f"row_len, max_samples_per_row and tile_latent_frames must be >= 1, got "
                     f"{row_len}, {max_samples_per_row}, {tile_latent_frames}")
  lengths = np.array([len(s) for s in seqs], np.int64)
  for i, n in enumerate(lengths):
    if n == 0:
      raise ValueError(f"sample {i} has no tokens")
    if n > row_len:
      raise ValueError(f"sample {i} has {n} tokens, more than row_len={row_len}; split or drop "
                       "it before packing")
  return lengths


def pack_greedy(seqs: Sequence[TokenSeq], row_len: int, max_samples_per_row: int,
                num_rows: Optional[int] = None, tile_latent_frames: int = 4,
                block_len: int | tuple[int, ...] = attention_blocks.DEFAULT_BLOCK_LEN,
                kv_cache_frames: int = 0, labels: Optional[Sequence[SlotLabels]] = None,
                text_len: int = 0, patch_dim: Optional[int] = None
                ) -> tuple[Batch, list[int]]:
  """First-fit packing that returns what did not fit.

  Args:
    seqs: samples; each must have 1..row_len tokens (else ValueError naming the sample).
    row_len: L, token positions per row.
    max_samples_per_row: S, sample slots per row.
    num_rows: B; None = as many rows as needed (then nothing is left over).
    tile_latent_frames: temporal tile length in latent frames.
    block_len: attention block of the block table (128 on CPU, 512 on accelerators), or a
      tuple of blocks to choose from for this batch (`attention_blocks.fitted_table`: the block
      and the chunk width that compute the fewest pairs; the table's shape then depends on the
      content, which suits one-off calls, not a training stream's fixed shapes).
    kv_cache_frames: the model's `decoder_kv_cache_frames`: the table then also covers the
      decoder's KV cache across tiles.
    labels: one `SlotLabels` per sample (None: reconstruction, no caption, input index).
    text_len: T of `text_ids` [B, S, T] (captions are cut to it).
    patch_dim: the width of `patches`: 3072 (4 frames), or 768 (frame 0) for batches of
      single-frame samples only (images, voxels), whose frames 1-3 are zero padding the model
      then neither reads nor decodes (`atoken.patch_width`). None: 768 when every sample is
      single-frame, else 3072 (a stream of fixed shapes passes its task's width instead).

  Returns:
    (batch, leftover): leftover lists the input indices that did not fit, in input order.
  """
  lengths = _check_inputs(seqs, row_len, max_samples_per_row, tile_latent_frames)
  if labels is not None and len(labels) != len(seqs):
    raise ValueError(f"{len(labels)} slot labels for {len(seqs)} samples")
  width = _patch_dim(seqs, patch_dim)
  row, slot, num_rows = _first_fit(lengths, row_len, max_samples_per_row, num_rows)
  b, l, s = num_rows, row_len, max_samples_per_row
  a = dict(
      patches=np.zeros((b, l, width), np.float32),
      coords=np.zeros((b, l, 4), np.int32),
      segment_ids=np.zeros((b, l), np.int32),
      sample_ids=np.zeros((b, l), np.int32),
      tile_index=np.zeros((b, l), np.int32),
      token_index=np.full((b, l), -1, np.int32),
      pos_row_weights=np.zeros((b, l, POS_GRID), np.float32),
      pos_col_weights=np.zeros((b, l, POS_GRID), np.float32),
      sample_index=np.full((b, s), -1, np.int32),
      sample_lengths=np.zeros((b, s), np.int32),
      modality=np.full((b, s), -1, np.int32),
      task=np.full((b, s), -1, np.int32),
      text_ids=np.zeros((b, s, text_len), np.int32),
      has_text=np.zeros((b, s), bool),
      orig_shape=np.zeros((b, s, 3), np.int32))
  fill = np.zeros(b, np.int64)  # tokens used per row
  groups = np.zeros(b, np.int64)  # segment ids used per row
  for i in np.flatnonzero(row >= 0):  # input order = slot order within each row
    r, k, n, seq = row[i], slot[i], lengths[i], seqs[i]
    try:
      rank, local, row_w, col_w = tile_layout(seq.coords, tile_latent_frames)
    except ValueError as e:
      raise ValueError(f"sample {i}: {e}") from None
    at = slice(fill[r], fill[r] + n)
    a["patches"][r, at] = seq.patches[:, :width]
    a["coords"][r, at] = local
    a["segment_ids"][r, at] = groups[r] + rank + 1
    a["sample_ids"][r, at] = k + 1
    a["tile_index"][r, at] = rank
    a["token_index"][r, at] = np.arange(n)
    a["pos_row_weights"][r, at] = row_w
    a["pos_col_weights"][r, at] = col_w
    a["sample_lengths"][r, k] = n
    label = labels[i] if labels is not None else SlotLabels()
    a["modality"][r, k] = MODALITY_IDS[seq.kind] if label.modality is None else label.modality
    a["sample_index"][r, k] = i if label.record_id is None else label.record_id
    a["task"][r, k] = label.task
    if label.text_ids is not None:
      ids = np.asarray(label.text_ids)[:text_len]
      a["text_ids"][r, k, :len(ids)] = ids
    a["has_text"][r, k] = label.has_text
    a["orig_shape"][r, k] = label.orig_shape
    fill[r] += n
    groups[r] += rank.max() + 1
  make_table = (attention_blocks.fitted_table if isinstance(block_len, tuple)
                else attention_blocks.block_table)
  a.update(make_table(
      a["segment_ids"], block_len, sample_ids=a["sample_ids"], tile_index=a["tile_index"],
      coords=a["coords"], cache_frames=kv_cache_frames, tile_frames=tile_latent_frames))
  return Batch(**a), [int(i) for i in np.flatnonzero(row < 0)]


def _patch_dim(seqs: Sequence[TokenSeq], patch_dim: Optional[int]) -> int:
  video = [i for i, seq in enumerate(seqs) if seq.kind == "video"]
  if patch_dim is None:
    return PATCH_DIM if video or not seqs else FRAME_PATCH_DIM
  if patch_dim not in (FRAME_PATCH_DIM, PATCH_DIM):
    raise ValueError(f"patch_dim must be {PATCH_DIM} or {FRAME_PATCH_DIM}, got {patch_dim}")
  if patch_dim == FRAME_PATCH_DIM and video:
    raise ValueError(f"sample {video[0]} is a video: its patches need patch_dim={PATCH_DIM}, "
                     f"not {FRAME_PATCH_DIM} (frame 0 only)")
  return patch_dim


def empty_batch(rows: int, row_len: int, slots: int,
                block_len: int = attention_blocks.DEFAULT_BLOCK_LEN) -> Batch:
  """An all-padding batch of one shape (model `init`, shape inference)."""
  return pack_greedy([], row_len, slots, rows, block_len=block_len)[0]


def pack(seqs: Sequence[TokenSeq], row_len: int, max_samples_per_row: int,
         num_rows: Optional[int] = None, tile_latent_frames: int = 4,
         block_len: int | tuple[int, ...] = attention_blocks.DEFAULT_BLOCK_LEN,
         kv_cache_frames: int = 0, patch_dim: Optional[int] = None) -> Batch:
  """Packs every sample (first fit, input order) into [B, row_len] rows; see `pack_greedy`.

  Raises ValueError when `num_rows` is given and some samples do not fit.
  """
  if num_rows is None and not seqs:
    raise ValueError("pack needs at least one sample when num_rows is None")
  batch, leftover = pack_greedy(seqs, row_len, max_samples_per_row, num_rows,
                                tile_latent_frames, block_len, kv_cache_frames,
                                patch_dim=patch_dim)
  if leftover:
    tokens = sum(len(seqs[i]) for i in leftover)
    raise ValueError(
        f"{len(leftover)} of {len(seqs)} samples ({tokens} tokens, first: sample {leftover[0]}) "
        f"did not fit into {num_rows} rows x {row_len} tokens x {max_samples_per_row} slots")
  return batch


# --------------------------------------------------------------------------- unpack, stats


def _slot_starts(batch: Batch) -> np.ndarray:
  """[B, S] first row position of each slot."""
  return np.cumsum(batch.sample_lengths, axis=1) - batch.sample_lengths


def unpack(values: np.ndarray, batch: Batch) -> list[np.ndarray]:
  """[B, L, ...] per-token values -> one [n_i, ...] array per placed sample, input order.

  For a batch from `pack` that is every input sample; rows of each follow TokenSeq order.
  """
  values = np.asarray(values)
  if values.shape[:2] != batch.segment_ids.shape:
    raise ValueError(f"values must be [B, L, ...] = {batch.segment_ids.shape}, got "
                     f"{values.shape}")
  starts, out = _slot_starts(batch), {}
  for r, k in zip(*np.nonzero(batch.sample_index >= 0)):
    start = starts[r, k]
    out[batch.sample_index[r, k]] = values[r, start:start + batch.sample_lengths[r, k]]
  return [out[i] for i in sorted(out)]


def unpack_samples(values: np.ndarray, batch: Batch) -> list[np.ndarray]:
  """[B, S, ...] per-slot values (e.g. pooled embeddings) -> one [...] per placed sample."""
  values = np.asarray(values)
  if values.shape[:2] != batch.sample_index.shape:
    raise ValueError(f"values must be [B, S, ...] = {batch.sample_index.shape}, got "
                     f"{values.shape}")
  r, k = np.nonzero(batch.sample_index >= 0)
  order = np.argsort(batch.sample_index[r, k])
  return [values[r[j], k[j]] for j in order]


def packing_efficiency(batch: Batch) -> float:
  """Real tokens / token capacity B * L, in [0, 1]."""
  return float(np.count_nonzero(batch.segment_ids)) / max(batch.segment_ids.size, 1)

