"""Which [B, L] rows a user-path call runs as: `Tokenizer.encode/decode` (and through it
`atoken tokenize` and eval) plan their packed batches here, and only here.

Row lengths come from a ladder with six rungs per octave, m * 2^k for m in {8, 9, 10, 11, 12, 14}
(below 8 every length is a rung): 8, 9, 10, 11, 12, 14, 16, 18, 20, 22, 24, 28, 32, 36, ...,
224, 256, 288, 320, 352, 384, 448, 512, ... Neighbouring rungs differ by at most 7/6, so a row
cut to the rung just above its content pads at most 1/7 (14.3%) of it, and a rung of 2^k or more
is a multiple of 2^(k-3) (long rows stay aligned to large blocks). 6 rungs per octave bound the
compiled lengths: a folder of photos between 128^2 and 1024^2 pixels (64 to 4,096 tokens) can
touch at most 37 row lengths, and in practice touches a handful (see README, "Compiled shapes").

A plan packs samples first-fit-decreasing into rows no longer than `max_row_len` (or the longest
sample's rung, when that is longer). Rows, fullest first, then form groups: a group's row length
is the rung of its fullest row, and the next row joins while the group still pads at most 1/7;
otherwise, or when the group has reached `max_call_tokens` tokens, it starts the next group. Each
group is one call. Every call therefore pads at most 1/7 of its B * L tokens: the bound holds
per call, not just on average, for one sample or many.

Slots per row (S, the pooling head's [B, S] outputs) are a power of 4 >= the fullest row (at most
`max_samples_per_row`).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from atoken_jax import packing
from atoken_jax.batch import Batch
from atoken_jax.tokens import TokenSeq

MANTISSAS = (8, 9, 10, 11, 12, 14)
MAX_PADDING = 1.0 - 12.0 / 14.0  # the widest rung gap, 12 -> 14: 1/7 of a row at most


def rung(n: int) -> int:
  """The smallest ladder rung >= n (n >= 1): exact up to 8, then m * 2^k, m in MANTISSAS."""
  if n < 1:
    raise ValueError(f"rung needs n >= 1, got {n}")
  if n <= 8:
    return int(n)
  scale = 1 << max((int(n) - 1).bit_length() - 4, 0)  # n in (8 * scale, 16 * scale]
  for m in MANTISSAS + (16,):
    if m * scale >= n:
      return m * scale
  raise AssertionError("unreachable: 16 * scale >= n")


def _rung_at_most(n: int) -> int:
  """The largest rung <= n (0 for n < 1)."""
  if n <= 8:
    return max(int(n), 0)
  scale = 1 << (int(n).bit_length() - 4)  # n in [8 * scale, 16 * scale)
  return max(m * scale for m in MANTISSAS if m * scale <= n)


def rungs_between(lo: int, hi: int) -> list[int]:
  """Every rung in [lo, hi], ascending."""
  out, n = [], rung(max(lo, 1))
  while n <= hi:
    out.append(n)
    n = rung(n + 1)
  return out


@dataclasses.dataclass(frozen=True)
class Call:
  """One jitted call: `rows` lists the input indices in each row, longest first."""
  row_len: int
  slots: int
  rows: tuple[tuple[int, ...], ...]

  @property
  def shape(self) -> tuple[int, int, int]:
    """(B, L, S): what jit compiles for."""
    return len(self.rows), self.row_len, self.slots


def _slots(fullest: int) -> int:
  """A power of 4 >= fullest: the pooling head's [B, S, H, L] costs little, shapes count more."""
  s = 1
  while s < fullest:
    s *= 4
  return s


def plan(lengths: Sequence[int], *, max_row_len: int = 0, max_samples_per_row: int = 64,
         max_call_tokens: int = 1 << 15) -> list[Call]:
  """Calls that together hold every sample once.

  Args:
    lengths: tokens per sample (each >= 1).
    max_row_len: rows hold at most this many tokens, or the longest sample's rung when that is
      longer. 0 = the longest sample's rung (right for attention whose cost grows with L^2:
      samples then share rows only as far as the longest one leaves room).
    max_samples_per_row: at most this many samples per row.
    max_call_tokens: B * L of a call stays within this (a row longer than it runs alone).

  Returns:
    Calls ordered by row length; within a row, samples in decreasing length.
  """
  lengths = [int(n) for n in lengths]
  if not lengths or min(lengths) < 1:
    raise ValueError(f"plan needs at least one sample and >= 1 token each, got {lengths}")
  if max_samples_per_row < 1 or max_call_tokens < 1 or max_row_len < 0:
    raise ValueError("max_samples_per_row and max_call_tokens must be >= 1, max_row_len >= 0")
  # a rung, so that no call's row length exceeds the rows' capacity (see `pack_call`)
  capacity = max(rung(max(lengths)), _rung_at_most(max_row_len))
  order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
  rows: list[list[int]] = []
  fill: list[int] = []
  for i in order:  # first fit decreasing
    for r, f in enumerate(fill):
      if f + lengths[i] <= capacity and len(rows[r]) < max_samples_per_row:
        rows[r].append(i)
        fill[r] += lengths[i]
        break
    else:
      rows.append([i])
      fill.append(lengths[i])
  groups: list[tuple[int, list[int]]] = []  # (row length, row ids), fullest row first
  total = 0
  for r in sorted(range(len(rows)), key=lambda r: -fill[r]):
    if groups:
      length, members = groups[-1]
      room = len(members) < max(max_call_tokens // length, 1)
      if room and total + fill[r] >= (1.0 - MAX_PADDING) * length * (len(members) + 1):
        members.append(r)
        total += fill[r]
        continue
    groups.append((rung(fill[r]), [r]))
    total = fill[r]
  calls = []
  for length, members in sorted(groups, key=lambda g: g[0]):
    members = sorted(members)  # creation order: `pack_call`'s first fit then rebuilds the rows
    slots = min(_slots(max(len(rows[r]) for r in members)), max_samples_per_row)
    calls.append(Call(length, slots, tuple(tuple(rows[r]) for r in members)))
  return calls


def padding_fraction(lengths: Sequence[int], calls: Sequence[Call]) -> float:
  """Padding / computed tokens (sum of B * L) over `calls`."""
  computed = sum(b * length for b, length, _ in (c.shape for c in calls))
  return 1.0 - sum(int(n) for n in lengths) / computed


def pack_call(seqs: Sequence[TokenSeq], call: Call, **pack_kwargs) -> Batch:
  """The [B, L] batch of one call (`sample_index` holds indices into `seqs`).

  `packing.pack`'s first fit, fed the call's samples longest first, rebuilds the planned rows:
  a sample went to row r of the plan because every earlier row lacked the room (in rows at least
  as long as this call's) or a free slot, and the call keeps the rows in creation order.
  pack_kwargs go to `packing.pack` (e.g. tile_latent_frames).
  """
  order = sorted((i for row in call.rows for i in row), key=lambda i: (-len(seqs[i]), i))
  batch = packing.pack([seqs[i] for i in order], call.row_len, call.slots,
                       num_rows=len(call.rows), **pack_kwargs)
  batch = batch.replace(sample_index=np.where(
      batch.sample_index >= 0, np.asarray(order, np.int32)[np.maximum(batch.sample_index, 0)],
      -1).astype(np.int32))
  got = tuple(tuple(int(i) for i in row if i >= 0) for row in batch.sample_index)
  if got != call.rows:
    raise AssertionError(f"packing.pack placed {got}, the plan says {call.rows}")
  return batch


DENSE_COST_IMPLS = ("dense", "chunked")
SEGMENT_AWARE_ROW_LEN = 1 << 14


def default_max_row_len(cfg) -> int:
  """Rows for `cfg`'s attention: attention that computes every pair of a row (dense, chunked)
  keeps rows at the longest sample's rung (0); attention whose cost follows the pairs inside
  segments (`attention_impl` naming any other backend) lets small samples share long rows."""
  impl = getattr(cfg, "attention_impl", "dense")
  return 0 if impl in DENSE_COST_IMPLS else SEGMENT_AWARE_ROW_LEN
