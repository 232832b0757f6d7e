"""A small deterministic data source for trainer tests: batch i is a pure function of
(seed, i), so a restored iterator continues exactly. Same batch format as data_pipelines."""
import os
import signal

import numpy as np

from atoken_jax import packing, tokens
from atoken_jax.text.tokenize import ByteTokenizer


class SyntheticImages:
  """Random images of a few sizes, packed into [rows, row_len] with per-slot annotations."""

  def __init__(self, seed=0, rows=2, row_len=32, slots=2, nan_at=(),
               sizes=((32, 32), (16, 48), (48, 16)), sigterm_at=None, understanding=False,
               modality=0):
    self.modality = modality
    self.sigterm_at = sigterm_at
    self.understanding = understanding
    self.seed, self.rows, self.row_len, self.slots = seed, rows, row_len, slots
    self.sizes = sizes
    self.index = 0
    self.nan_at = set(nan_at)

  def __iter__(self):
    return self

  def __next__(self):
    rng = np.random.default_rng([self.seed, self.index])
    seqs = []
    for _ in range(self.rows):
      h, w = self.sizes[rng.integers(len(self.sizes))]
      img = np.tanh(rng.normal(size=(h, w, 3))).astype(np.float32)
      seqs.append(tokens.to_tokens(img))
    b = packing.pack(seqs, self.row_len, self.slots, num_rows=self.rows)
    out = {k: getattr(b, k) for k in ("patches", "coords", "segment_ids", "sample_ids",
                                       "tile_index", "token_index", "pos_row_weights",
                                       "pos_col_weights", "sample_index", "sample_lengths",
                                       "attn_pairs", "attn_kv_counts")}
    out["modality"] = np.where(b.sample_index >= 0, self.modality, -1).astype(np.int32)
    out["task"] = np.where(b.sample_index >= 0, int(self.understanding), -1).astype(np.int32)
    # short enough for 16 bytes: captions that differ after truncation give distinct texts
    captions = [f"picture {int(i)}" for i in b.sample_index.reshape(-1)]
    out["text_ids"] = ByteTokenizer(max_len=16)(captions).reshape(self.rows, self.slots, 16)
    out["has_text"] = b.sample_index >= 0
    if self.index == self.sigterm_at:  # a preemption notice arrives while reading batch i
      os.kill(os.getpid(), signal.SIGTERM)
    if self.index in self.nan_at:
      out["patches"] = np.full_like(out["patches"], np.nan)
    self.index += 1
    return out

  def get_state(self):
    return {"index": self.index}

  def set_state(self, state):
    self.index = int(state["index"])


def factory(**kw):
  return lambda cfg: {name: SyntheticImages(seed=cfg.seed + i, **kw)
                      for i, name in enumerate(cfg.tasks)}
