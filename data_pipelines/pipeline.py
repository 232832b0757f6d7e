"""One task's Grain pipeline and its checkpointable iterator.

  parts (sources x modalities)                       sources.py
    -> [shard_index::shard_count]  per process: disjoint, union = the dataset
    -> shuffle(seed) -> repeat(num_epochs)           (reshuffled every epoch, shuffle.py)
    -> MapDataset.mix(weights)                       (proportional to size by default)
    -> random_map(SampleFn)                          decode, transform, caption, tokenise
    -> PackIterDataset                               `atoken_jax.batch.Batch` [B, L] (with the
                                                     perceptual resize weights when asked),
                                                     exact resumable state
    -> mp_prefetch(num_workers)                      Grain worker processes, or with
                                                     0 workers a prefetch thread
    -> TaskIterator                                  bad-data totals, abort, metrics

`TaskIterator` is a `grain.DatasetIterator`: `get_state()` is JSON (pipeline position + data
totals), so `grain.checkpoint.CheckpointSave(it)` / `CheckpointRestore(it)` store it with an
Orbax training checkpoint, and after `set_state` the next batch is the one that would have come.
"""
from __future__ import annotations

import json
import sys
from typing import Optional

import grain
import numpy as np

from atoken_jax.batch import Batch
from atoken_jax.config import FRAME_PATCH_DIM, PATCH_DIM
from data_pipelines import bad_data, samples, shuffle, sources
from data_pipelines.pack_stage import PackIterDataset, PackOptions


def _shard(cfg, shard_index: Optional[int], shard_count: Optional[int]) -> tuple[int, int]:
  if shard_index is None:
    shard_index = cfg.shard_index
  if shard_count is None:
    shard_count = cfg.shard_count
  if shard_index < 0 or shard_count < 0:
    import jax  # pylint: disable=import-outside-toplevel
    shard_index = jax.process_index() if shard_index < 0 else shard_index
    shard_count = jax.process_count() if shard_count < 0 else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} must lie in [0, shard_count={shard_count})")
  return int(shard_index), int(shard_count)


def _seed(*values: int) -> int:
  return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


def pack_options(cfg) -> PackOptions:
  perceptual = cfg.get("perceptual") or {}
  return PackOptions(
      batch_rows=int(cfg.batch_rows), row_len=int(cfg.row_len),
      max_samples_per_row=int(cfg.max_samples_per_row),
      tile_latent_frames=int(cfg.tile_latent_frames),
      attention_block=int(cfg.get("attention_block", 128)),
      kv_cache_frames=int(cfg.get("kv_cache_frames", 0)), text_len=int(cfg.text.text_len),
      lookahead=float(cfg.pack.lookahead), max_wait=int(cfg.pack.max_wait),
      read_threads=int(cfg.pack.read_threads), read_ahead=int(cfg.pack.read_ahead),
      perceptual_size=int(perceptual.get("size", 0)),
      perceptual_max_side=int(perceptual.get("max_side", 0)),
      patch_dim=_patch_dim(tuple(cfg.get("modalities") or ())))


def _patch_dim(modalities: tuple[str, ...]) -> int:
  """Images and voxels are single-frame: a task of only those carries frame 0 of each patch
  (`atoken_jax.model.atoken.patch_width`); any video needs all 4 frames."""
  single_frame = bool(modalities) and set(modalities) <= {"image", "voxels"}
  return FRAME_PATCH_DIM if single_frame else PATCH_DIM


def build_task_dataset(cfg, shard_index: Optional[int] = None,
                       shard_count: Optional[int] = None) -> grain.IterDataset:
  """A task config -> Grain IterDataset of (`Batch`, stats JSON) pairs.

  Args:
    cfg: task config (`config.default_task_config`).
    shard_index, shard_count: this process's shard; None = cfg, where -1 means
      jax.process_index() / jax.process_count().
  """
  index, count = _shard(cfg, shard_index, shard_count)
  parts = sources.resolve_parts(cfg)
  weights = list(cfg.weights) or None
  if weights is not None and len(weights) != len(parts):
    raise ValueError(f"task {cfg.name!r}: {len(weights)} weights for {len(parts)} parts "
                     f"{[p.description for p in parts]}")
  epochs = int(cfg.num_epochs) or None
  streams, sizes = [], []
  for p_id, part in enumerate(parts):
    ds = part.dataset[index::count]
    if len(ds) == 0:
      raise ValueError(f"{part.description}: {len(part)} records cannot feed {count} shards")
    if cfg.shuffle:
      ds = shuffle.shuffle(ds, _seed(cfg.seed, p_id))
    streams.append(ds.repeat(epochs))
    sizes.append(len(ds))
  if len(streams) == 1:
    mixed = streams[0]
  else:
    mixed = grain.MapDataset.mix(streams, weights or [float(s) for s in sizes])
  mixed = mixed.random_map(samples.SampleFn(cfg), seed=_seed(cfg.seed, 1 << 20, index))
  ds = PackIterDataset(mixed, pack_options(cfg))
  if cfg.num_workers > 0:
    _ensure_absl_flags()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=int(cfg.num_workers), per_worker_buffer_size=int(cfg.worker_buffer_size)))
  elif cfg.prefetch_batches > 0:  # in-process: prepare batches while the step runs
    ds = grain.experimental.ThreadPrefetchIterDataset(
        ds, prefetch_buffer_size=int(cfg.prefetch_batches))
  return ds


def _ensure_absl_flags() -> None:
  """Grain worker processes read absl flags; parse them if the program has not."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(sys.argv[:1], known_only=True)


class TaskIterator(grain.DatasetIterator):
  """Batches of one task: `atoken_jax.batch.Batch` of numpy arrays with static shapes.

  sample_index [B, S] holds each slot's record index in its source (-1 empty); modality, task,
  text_ids [B, S, text_len], has_text and orig_shape come from the samples; image_rows /
  image_cols / image_valid are set when the config's `perceptual.size` is (the trainer fills
  it from its loss config, `train.perceptual_inputs.data_canvas`).
  """

  def __init__(self, cfg, shard_index: Optional[int] = None,
               shard_count: Optional[int] = None):
    super().__init__()
    self.cfg = cfg
    self.name = cfg.name
    self._dataset = build_task_dataset(cfg, shard_index, shard_count)
    self._it = self._dataset.__iter__()
    self.stats = bad_data.DataStats(cfg.name, float(cfg.bad.max_fraction),
                                    int(cfg.bad.min_records), int(cfg.bad.warn_limit))

  def __next__(self) -> Batch:
    if self._it is None:
      raise StopIteration
    try:
      batch, stats = next(self._it)
    except StopIteration:
      self.close()  # end of a finite stream: stop threads / workers now, not at GC time
      raise
    try:
      self.stats.update(json.loads(stats))
    except bad_data.BadDataError:
      self.close()  # the abort is final; do not leave prefetch threads to the GC
      raise
    return batch

  def get_state(self) -> dict:
    return {"pipeline": self._live().get_state(), "stats": self.stats.state()}

  def set_state(self, state: dict) -> None:
    self._live().set_state(state["pipeline"])
    self.stats.load_state(state["stats"])

  def _live(self):
    if self._it is None:
      raise RuntimeError(f"task {self.name!r}: the iterator was closed (or its data ended)")
    return self._it

  def metrics(self) -> dict[str, float]:
    """Bad-data counters and packing efficiency so far (see `DataStats.metrics`)."""
    return self.stats.metrics()

  def close(self) -> None:
    if getattr(self, "_it", None) is None:
      return
    it, self._it = self._it, None
    try:
      it.close()
    except RuntimeError as e:  # finalised by the GC on the prefetch thread itself; that
      if "join current thread" not in str(e):  # thread was told to stop and exits on its own
        raise
    super().close()


def build_task_iterator(cfg, shard_index: Optional[int] = None,
                        shard_count: Optional[int] = None) -> TaskIterator:
  """The trainer's entry point for one task; see `TaskIterator`."""
  return TaskIterator(cfg, shard_index, shard_count)
