"""Throughput, FLOPs and MFU accounting, and the writers (TensorBoard + console progress)."""
from __future__ import annotations

import logging
import os
import time
from typing import Mapping

import jax
import numpy as np

from atoken_jax import attention_blocks
from atoken_jax import config as config_lib
from atoken_jax.batch import Batch
from atoken_jax.model import attention

log = logging.getLogger(__name__)

# Dense bf16 peak FLOP/s per device, by jax `device_kind` substring (vendor data sheets).
PEAK_FLOPS = {
    "H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v6": 918e12,
}


def peak_flops_per_device(override: float = 0.0) -> float | None:
  if override:
    return float(override)
  kind = jax.devices()[0].device_kind
  for name, flops in PEAK_FLOPS.items():
    if name.lower() in kind.lower():
      return flops
  return None


def batch_stats(batch: Batch, attention_impl: str = "auto") -> dict:
  """Host-side counts of a packed batch, read from arrays already on the host (no device round
  trip): real tokens, the query-key pairs attention needs (sum over attention groups of n^2;
  FLOPs and MFU count these) and the pairs one attention layer computes with `attention_impl`
  (the block table's visited blocks, else every pair of the row)."""
  seg = np.asarray(batch.segment_ids)
  needed = attention_blocks.pairs_needed(seg)
  computed = int(seg.shape[0]) * int(seg.shape[1]) ** 2
  impl = attention.resolve_impl(attention_impl)
  if impl == "block_sparse" and batch.attn_pairs is not None:
    table = {k: getattr(batch, k) for k in attention_blocks.TABLE_KEYS}
    computed = attention_blocks.pairs_computed(table, seg.shape[1])
  elif impl == "splash":  # every block holding an allowed pair, in splash's 512 (or 128) blocks
    block = 512 if seg.shape[1] % 512 == 0 else 128
    table = attention_blocks.block_table(seg, block)
    computed = int(table["attn_kv_counts"].sum()) * (seg.shape[1] // table[
        "attn_kv_counts"].shape[1]) ** 2
  return {"tokens": int(np.count_nonzero(seg)), "attn_pairs": needed,
          "attn_pairs_computed": computed}


def train_flops(cfg: config_lib.ModelConfig, tokens: int, attn_pairs: int,
                patch_dim: int = config_lib.PATCH_DIM) -> float:
  """Analytic FLOPs of forward + backward (3x forward) for `tokens` real tokens whose attention
  groups hold `attn_pairs` query-key pairs in all, with patches `patch_dim` wide."""
  mean_len = attn_pairs / max(tokens, 1)
  return 3.0 * tokens * cfg.flops_per_token(seq_len=int(round(mean_len)), patch_dim=patch_dim)


def memory_in_use_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats()
  return None if not stats else int(stats.get("bytes_in_use", 0))


class Writer:
  """Scalars (and images) to TensorBoard event files in WORKDIR/tb, from process 0 only."""

  def __init__(self, workdir: str):
    self._tb = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(os.path.join(workdir, "tb"))

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(k, float(v), step)

  def image(self, step: int, name: str, image_hwc: np.ndarray) -> None:
    if self._tb is not None:
      self._tb.add_image(name, np.clip(image_hwc, 0.0, 1.0), step, dataformats="HWC")

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class Timer:
  """Accumulates wall time spent waiting for data vs. total, between reports."""

  def __init__(self):
    self.reset()

  def reset(self):
    self.start = time.perf_counter()
    self.data_s = 0.0

  def data(self, seconds: float):
    self.data_s += seconds

  def elapsed(self) -> float:
    return time.perf_counter() - self.start
