"""Host-side block tables for block-sparse attention over packed rows (numpy only).

A packed row of L tokens is cut into blocks of `block_len` tokens. Attention groups (a sample's
temporal tile, a 3D window) are contiguous in the row, so the (query block, key block) pairs that
hold any allowed query-key pair are known on the host from each group's token range. The table
lists only those pairs; `atoken_jax.model.block_sparse` visits them and nothing else.

Table layout (shapes depend only on B, L and the block, so one compile serves every batch):
  attn_pairs [B, C, G, 2] int32: (query block, key block) of the live pairs of each row, walked
    in chunks of G pairs. Within a chunk the query blocks are distinct (the kernel updates
    their softmax state in parallel). Padding pairs are (-1, -1). C = ceil(n_blocks^2 / G) holds
    any row; the kernel loops only over the chunks that hold a live pair (C is a capacity, not
    a trip count); padding pairs inside a partly filled chunk are computed fully masked
    (`pairs_computed` counts them).
  attn_kv_counts [B, n_blocks] int32: live key blocks per query block (0 = a block of padding).
    Its width tells the kernel the block size: block_len = L / n_blocks (a divisor of L).

A superset of the needed pairs is always exact (the attention mask still applies inside a
visited pair); only a missing pair would be wrong, so every group's range is taken as
[first token, last token] even if the group were not contiguous.
"""
from __future__ import annotations

import numpy as np

TABLE_KEYS = ("attn_pairs", "attn_kv_counts")
DEFAULT_BLOCK_LEN = 128  # CPU; accelerators want larger blocks (`block_len_for`)
ACCELERATOR_BLOCK_LEN = 512
MAX_CHUNK_PAIRS = 16


def call_blocks(platform: str) -> tuple[int, int]:
  """The blocks `fitted_table` chooses from for one user-path call on a jax platform ("cpu",
  "gpu", "tpu"): the platform's block and half of it."""
  block = DEFAULT_BLOCK_LEN if platform == "cpu" else ACCELERATOR_BLOCK_LEN
  return block, block // 2


def divisor_block(length: int, block_len: int) -> int:
  """The block actually used for rows of `length`: the largest divisor of `length` that is at
  most `block_len` (the kernel reads block_len = L / n_blocks from the table's shape)."""
  return max(d for d in range(1, min(block_len, length) + 1) if length % d == 0)


def default_chunk(block_len: int, n_blocks: int) -> int:
  """Pairs per chunk: 16 of 128-token blocks, 8 of 256, 4 of 512 (larger blocks are for
  accelerators, which have memory for more scores in flight), never more than there are query
  blocks."""
  return max(1, min(n_blocks, MAX_CHUNK_PAIRS * DEFAULT_BLOCK_LEN // block_len))


def group_ranges(segment_ids: np.ndarray) -> list[tuple[int, int, int, int]]:
  """[L] group ids (0 = padding) -> [(q_first, q_last, k_first, k_last)] per group."""
  seg = np.asarray(segment_ids)
  pos = np.flatnonzero(seg > 0)
  _, group = np.unique(seg[pos], return_inverse=True)
  first = np.full(group.max(initial=-1) + 1, len(seg), np.int64)
  last = np.full_like(first, -1)
  np.minimum.at(first, group, pos)
  np.maximum.at(last, group, pos)
  return [(int(a), int(b), int(a), int(b)) for a, b in zip(first, last)]


def kv_cache_ranges(segment_ids, sample_ids, tile_index, coords, cache_frames: int,
                    tile_frames: int) -> list[tuple[int, int, int, int]]:
  """The decoder's KV cache: each tile's queries x the last `cache_frames` latent frames of the
  same sample's previous tile (`atoken_jax.model.atoken.tile_cache_mask`). Inputs are one row:
  [L] ids and [L, 4] tile-local coords."""
  if cache_frames <= 0:
    return []
  seg, sample, tile = (np.asarray(a) for a in (segment_ids, sample_ids, tile_index))
  recent = (np.asarray(coords)[:, 0] >= tile_frames - cache_frames) & (sample > 0)
  out = []
  for q_first, q_last, _, _ in group_ranges(seg):
    s, t = sample[q_first], tile[q_first]
    keys = np.flatnonzero(recent & (sample == s) & (tile == t - 1))
    if keys.size:
      out.append((q_first, q_last, int(keys[0]), int(keys[-1])))
  return out


def live_blocks(ranges, n_blocks: int, block_len: int) -> np.ndarray:
  """[(q_first, q_last, k_first, k_last)] token ranges -> [n_blocks, n_blocks] bool."""
  live = np.zeros((n_blocks, n_blocks), bool)
  for q0, q1, k0, k1 in ranges:
    live[q0 // block_len:q1 // block_len + 1, k0 // block_len:k1 // block_len + 1] = True
  return live


def chunk_pairs(live: np.ndarray, chunk: int) -> list[list[tuple[int, int]]]:
  """Live (q, k) block pairs -> chunks of <= `chunk` pairs with distinct query blocks.

  Each chunk takes the next key block of the `chunk` query blocks with the most pairs left:
  the fewest chunks possible, max(most pairs of one query block, ceil(pairs / chunk)).
  """
  keys = [np.flatnonzero(row) for row in live]
  left = live.sum(1)
  taken = np.zeros_like(left)
  chunks = []
  while left.any():
    order = np.argsort(-left, kind="stable")[:chunk]
    order = order[left[order] > 0]
    chunks.append([(int(q), int(keys[q][taken[q]])) for q in np.sort(order)])
    taken[order] += 1
    left[order] -= 1
  return chunks


def block_table(segment_ids: np.ndarray, block_len: int = DEFAULT_BLOCK_LEN, *,
                sample_ids=None, tile_index=None, coords=None, cache_frames: int = 0,
                tile_frames: int = 4, chunk: int | None = None) -> dict[str, np.ndarray]:
  """The block table of a packed batch (see the module docstring).

  Args:
    segment_ids: [B, L] int attention groups, 0 = padding (tokens of a group contiguous).
    block_len: tokens per block; when L is not a multiple, the largest divisor of L below it.
    sample_ids, tile_index, coords: [B, L], [B, L], [B, L, 4]; needed only with cache_frames.
    cache_frames: > 0 adds the decoder KV-cache pairs (tiles see the previous tile's last
      `cache_frames` latent frames); the table then covers both the encoder's and the decoder's
      mask (the encoder visits those extra pairs too, masked).
    tile_frames: latent frames per temporal tile.
    chunk: pairs per chunk (default `default_chunk`).

  Returns:
    {"attn_pairs": [B, C, G, 2] int32, "attn_kv_counts": [B, n_blocks] int32},
    C = ceil(n_blocks^2 / G).
  """
  live = live_rows(segment_ids, block_len, sample_ids=sample_ids, tile_index=tile_index,
                   coords=coords, cache_frames=cache_frames, tile_frames=tile_frames)
  return _table(live, chunk or default_chunk(np.shape(segment_ids)[1] // live.shape[1],
                                             live.shape[1]))


def live_rows(segment_ids: np.ndarray, block_len: int, *, sample_ids=None, tile_index=None,
              coords=None, cache_frames: int = 0, tile_frames: int = 4) -> np.ndarray:
  """[B, L] groups -> [B, n_blocks, n_blocks] bool: the block pairs holding an allowed pair
  (arguments as `block_table`'s; block_len becomes the largest divisor of L below it)."""
  seg = np.asarray(segment_ids)
  if seg.ndim != 2 or block_len < 1:
    raise ValueError(f"segment_ids must be [B, L] and block_len >= 1, got {seg.shape}, "
                     f"{block_len}")
  b, length = seg.shape
  block_len = divisor_block(length, block_len)
  n_blocks = length // block_len
  live = np.zeros((b, n_blocks, n_blocks), bool)
  for r in range(b):
    ranges = group_ranges(seg[r])
    if cache_frames:
      ranges += kv_cache_ranges(seg[r], sample_ids[r], tile_index[r], coords[r], cache_frames,
                                tile_frames)
    live[r] = live_blocks(ranges, n_blocks, block_len)
  return live


def _table(live: np.ndarray, chunk: int) -> dict[str, np.ndarray]:
  b, n_blocks, _ = live.shape
  pairs = np.full((b, -(-n_blocks * n_blocks // chunk), chunk, 2), -1, np.int32)
  for r in range(b):
    for c, members in enumerate(chunk_pairs(live[r], chunk)):
      pairs[r, c, :len(members)] = members
  return {"attn_pairs": pairs, "attn_kv_counts": live.sum(2).astype(np.int32)}


def _chunks_needed(live: np.ndarray, chunk: int) -> int:
  """Chunks the fullest row of [B, nb, nb] `live` takes (what `chunk_pairs` achieves: the
  most pairs of one query block, or ceil(pairs / chunk) when that is more)."""
  per_q = live.sum(2)
  return int(np.max(np.maximum(per_q.max(1), -(-per_q.sum(1) // chunk)), initial=0))


def fitted_table(segment_ids: np.ndarray, blocks: tuple[int, ...], *, gain: float = 0.8,
                 **kwargs) -> dict[str, np.ndarray]:
  """The block table, block and chunk width chosen for this batch's content.

  For one call of the user path, whose shape is compiled anyway: rows run their chunks in
  lockstep, each chunk `G` pairs wide, so a row holding one large sample among small ones
  computes (the large sample's key blocks per query block) x G pairs, most of them padding,
  when G is the default (every query block). The candidates are each block of `blocks` with
  each power of two G up to its default; the default table (`blocks[0]`, default G) is kept
  unless a candidate computes at most `gain` x its pairs (every other shape is one more compile,
  and smaller blocks cost more per pair); then the candidate computing the fewest pairs wins,
  the larger block and the wider chunk among equals. kwargs as `block_table`'s.
  """
  rows, length = np.shape(segment_ids)
  scored = []  # (pairs computed, -block, -G, candidate index, live); the default first
  for block in blocks:
    live = live_rows(segment_ids, block, **kwargs)
    n_blocks = live.shape[1]
    block = length // n_blocks  # the divisor of L actually used
    widest = default_chunk(block, n_blocks)
    for g in [widest] + [1 << k for k in range(widest.bit_length()) if 1 << k < widest]:
      scored.append((rows * _chunks_needed(live, g) * g * block ** 2, -block, -g, len(scored),
                     live))
  default = scored[0]
  best = min(scored, key=lambda c: c[:4])
  if best[0] > gain * default[0]:
    best = default
  return _table(best[4], -best[2])


def full_table(batch: int, length: int, block_len: int) -> dict[str, np.ndarray]:
  """Every (query block, key block) pair of every row: for masks whose groups are scattered
  (e.g. 3D windows in voxel order), exact but not sparse."""
  seg = np.ones((batch, length), np.int32)
  return block_table(seg, block_len)


def live_chunks(pairs: np.ndarray) -> np.ndarray:
  """[B, C, G, 2] -> [B] chunks holding at least one live pair."""
  return (np.asarray(pairs)[..., 0] >= 0).any(-1).sum(-1)


def pairs_computed(table: dict[str, np.ndarray], length: int) -> int:
  """Query-key pairs the kernel computes for this table: rows run in lockstep for as many
  chunks as the fullest row has, each chunk a full G slots (padding pairs computed masked),
  each pair block_len^2."""
  pairs, counts = table["attn_pairs"], table["attn_kv_counts"]
  block_len = length // counts.shape[1]
  b, _, g, _ = pairs.shape
  return int(b * int(live_chunks(pairs).max(initial=0)) * g) * block_len ** 2


def pairs_needed(segment_ids: np.ndarray) -> int:
  """Sum over rows and attention groups of n^2 (the query-key pairs the segment mask allows)."""
  total = 0
  for row in np.asarray(segment_ids):
    total += int(np.sum(np.bincount(row[row > 0]).astype(np.int64) ** 2))
  return total
