"""The packing stage: a Grain IterDataset that turns processed samples into static [B, L] batches.

Design (why the checkpoint stays small and exact): the stage reads its parent -- a Grain
*MapDataset* of `samples.Processed`, deterministic per index -- by index itself, and carries
left-over samples between batches. Its state is only

  {"next": the next parent index to read, "pending": [[index, piece, age], ...]},

so a left-over sample is saved as the index that produced it (plus which clip of it), not as
pixels; `set_state` re-reads those indices and gets the very same samples back (the parent is
a pure function of the index: Grain's `random_map` seeds each element by its index). After a
restore the next batch is exactly the one that would have come.

Per batch: candidates = pending samples + newly read ones, read until they hold at least
`lookahead * B * L` tokens. Order: samples that already waited `max_wait` batches first (oldest
first; so nothing starves), then the rest by decreasing length (first-fit decreasing packs
tighter), ties in arrival order. `atoken_jax.packing.pack_greedy` places them first-fit into
B rows; what did not fit becomes the new pending list. At the end of a finite stream the
pending samples are flushed in further (partly empty) batches.

mp_prefetch slices the parent per worker through `set_slice` (worker w reads indices w, w + W,
...): each worker packs its own sub-stream, so batches depend on the worker count (Grain's
documented behaviour for stateful stages) but the samples themselves do not.
"""
from __future__ import annotations

import collections
import dataclasses
import json
from concurrent import futures
from typing import Any

import grain
import numpy as np

from atoken_jax import perceptual_canvas
from atoken_jax.batch import Batch
from atoken_jax.packing import SlotLabels, pack_greedy

MAX_NAMES_PER_BATCH = 16


@dataclasses.dataclass(frozen=True)
class PackOptions:
  """Static batch shape and packing knobs (see `config.default_task_config`)."""
  batch_rows: int
  row_len: int
  max_samples_per_row: int
  tile_latent_frames: int = 4
  attention_block: int = 128
  kv_cache_frames: int = 0
  text_len: int = 64
  lookahead: float = 1.5
  max_wait: int = 4
  read_threads: int = 2
  read_ahead: int = 8
  perceptual_size: int = 0  # > 0: batches carry the perceptual resize weights ...
  perceptual_max_side: int = 0  # ... of images up to this side onto a size^2 view
  patch_dim: int = 3072  # 768: a stream of single-frame samples carries frame 0 only


class PackIterDataset(grain.IterDataset):
  """Packs a MapDataset of `samples.Processed` into (`Batch`, stats JSON) pairs."""

  def __init__(self, parent: grain.MapDataset, options: PackOptions):
    super().__init__(parent)
    self._options = options

  def set_slice(self, sl: slice, sequential_slice: bool = False) -> None:
    """Called by mp_prefetch inside each worker: read only this worker's indices."""
    del sequential_slice  # always strided, so workers interleave in stream order
    self._parents = (self._parent.slice(sl),)

  def __iter__(self) -> "PackIterator":
    return PackIterator(self._parent, self._options)

  def __str__(self) -> str:
    return f"PackIterDataset({self._options})"


@dataclasses.dataclass(eq=False)
class _Candidate:
  index: int
  piece: int
  age: int
  sample: Any

  def __len__(self) -> int:
    return len(self.sample.tokens)


class PackIterator(grain.DatasetIterator):
  """Iterator of `PackIterDataset`; state = next parent index + pending (index, piece, age)."""

  def __init__(self, parent: grain.MapDataset, options: PackOptions):
    super().__init__()
    self._source = parent
    self._opt = options
    self._length = len(parent)
    self._next = 0
    self._pending: list[_Candidate] = []
    self._ahead: collections.OrderedDict = collections.OrderedDict()  # index -> Future
    self._pool = (futures.ThreadPoolExecutor(options.read_threads, "atoken-read")
                  if options.read_threads > 0 else None)

  # ------------------------------------------------------------------ reading

  def _read(self, index: int):
    """parent[index], with up to `read_ahead` later indices decoding in the thread pool."""
    if self._pool is None:
      return self._source[index]
    stop = min(index + 1 + self._opt.read_ahead, self._length)
    for i in range(max(index, next(reversed(self._ahead), index - 1) + 1), stop):
      self._ahead[i] = self._pool.submit(self._source.__getitem__, i)
    while self._ahead and next(iter(self._ahead)) < index:  # stale (after set_state)
      self._ahead.popitem(last=False)[1].cancel()
    future = self._ahead.pop(index, None)
    return future.result() if future is not None else self._source[index]

  def _drop_read_ahead(self) -> None:
    for f in self._ahead.values():
      f.cancel()
    self._ahead.clear()

  # ------------------------------------------------------------------ packing

  def __next__(self) -> tuple[Batch, str]:
    opt = self._opt
    stats = {"records": 0, "bad": {}, "bad_names": [], "notes": {}}
    candidates = list(self._pending)
    tokens = sum(len(c) for c in candidates)
    want_tokens = opt.lookahead * opt.batch_rows * opt.row_len
    want_samples = opt.lookahead * opt.batch_rows * opt.max_samples_per_row
    while (tokens < want_tokens and len(candidates) < want_samples
           and self._next < self._length):
      index = self._next
      processed = self._read(index)
      self._next += 1
      stats["records"] += 1
      for key, n in processed.notes.items():
        stats["notes"][key] = stats["notes"].get(key, 0) + n
      if processed.bad is not None:
        reason, name, message = processed.bad
        stats["bad"][reason] = stats["bad"].get(reason, 0) + 1
        if len(stats["bad_names"]) < MAX_NAMES_PER_BATCH:
          stats["bad_names"].append([name, reason, message[:200]])
        continue
      for piece, sample in enumerate(processed.samples):
        candidates.append(_Candidate(index, piece, 0, sample))
        tokens += len(sample.tokens)
    if not candidates:
      if stats["records"]:  # only bad records were left: report them in an empty batch
        return self._emit(None, stats)
      raise StopIteration
    aged = [c for c in candidates if c.age >= opt.max_wait]
    fresh = [c for c in candidates if c.age < opt.max_wait]
    order = (sorted(aged, key=lambda c: -c.age) + sorted(fresh, key=lambda c: -len(c)))
    batch, leftover = self._pack(order)
    self._pending = [dataclasses.replace(order[i], age=order[i].age + 1) for i in leftover]
    return self._emit(batch, stats)

  def _pack(self, order: list[_Candidate]) -> tuple[Batch, list[int]]:
    opt = self._opt
    labels = [SlotLabels(task=c.sample.task, modality=c.sample.modality,
                         text_ids=c.sample.text_ids, has_text=c.sample.has_text,
                         orig_shape=c.sample.orig_shape, record_id=c.sample.record_id)
              for c in order]
    batch, leftover = pack_greedy([c.sample.tokens for c in order], opt.row_len,
                                  opt.max_samples_per_row, opt.batch_rows,
                                  opt.tile_latent_frames, opt.attention_block,
                                  opt.kv_cache_frames, labels=labels, text_len=opt.text_len,
                                  patch_dim=opt.patch_dim)
    if opt.perceptual_size:
      batch = perceptual_canvas.with_resize_weights(batch, opt.perceptual_size,
                                                    opt.perceptual_max_side)
    return batch, leftover

  def _emit(self, batch: Batch, stats: dict) -> tuple[Batch, str]:
    if batch is None:
      batch, _ = self._pack([])
    stats["real_tokens"] = int(np.count_nonzero(batch.segment_ids))
    stats["capacity"] = int(batch.segment_ids.size)
    stats["samples"] = int(np.count_nonzero(batch.sample_index >= 0))
    return batch, json.dumps(stats)

  # ------------------------------------------------------------------ state

  def get_state(self) -> dict:
    return {"next": self._next,
            "pending": [[c.index, c.piece, c.age] for c in self._pending]}

  def set_state(self, state: dict) -> None:
    self._drop_read_ahead()
    self._next = int(state["next"])
    self._pending, cache = [], {}
    for index, piece, age in state["pending"]:
      if index not in cache:
        cache[index] = self._source[index]
      self._pending.append(_Candidate(index, piece, age, cache[index].samples[piece]))

  def close(self) -> None:
    self._drop_read_ahead()
    if self._pool is not None:
      try:
        self._pool.shutdown(wait=False, cancel_futures=True)
      except Exception:  # noqa: BLE001 - at interpreter exit the pool's module may be gone
        pass
      self._pool = None
    super().close()

