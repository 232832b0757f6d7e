"""A small deterministic data source for trainer tests: batch i is a pure function of
(seed, i), so a restored iterator continues exactly. Same batch type as data_pipelines: an
`atoken_jax.batch.Batch` built by `packing.pack_greedy`, with the perceptual resize weights
when the task's data config asks for them (`perceptual.size`)."""
import os
import signal

import numpy as np

from atoken_jax import packing, perceptual_canvas, tokens
from atoken_jax.text.tokenize import ByteTokenizer

TEXT_LEN = 16  # short enough for 16 bytes: captions that differ after truncation differ


class SyntheticImages:
  """Random images of a few sizes, packed into [rows, row_len] with per-slot annotations."""

  def __init__(self, seed=0, rows=2, row_len=32, slots=2, nan_at=(),
               sizes=((32, 32), (16, 48), (48, 16)), sigterm_at=None, understanding=False,
               modality=0, perceptual=(0, 0)):
    self.modality = modality
    self.sigterm_at = sigterm_at
    self.understanding = understanding
    self.seed, self.rows, self.row_len, self.slots = seed, rows, row_len, slots
    self.sizes = sizes
    self.perceptual = perceptual  # (size, max_side); size 0 = no resize weights
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
    captions = ByteTokenizer(max_len=TEXT_LEN)([f"picture {i}" for i in range(len(seqs))])
    labels = [packing.SlotLabels(task=int(self.understanding), modality=self.modality,
                                 text_ids=ids, has_text=True) for ids in captions]
    b, leftover = packing.pack_greedy(seqs, self.row_len, self.slots, self.rows, labels=labels,
                                      text_len=TEXT_LEN)
    assert not leftover, "SyntheticImages: the samples must fit"
    if self.perceptual[0]:
      b = perceptual_canvas.with_resize_weights(b, *self.perceptual)
    if self.index == self.sigterm_at:  # a preemption notice arrives while reading batch i
      os.kill(os.getpid(), signal.SIGTERM)
    if self.index in self.nan_at:
      b = b.replace(patches=np.full_like(b.patches, np.nan))
    self.index += 1
    return b

  def get_state(self):
    return {"index": self.index}

  def set_state(self, state):
    self.index = int(state["index"])


def perceptual_of(cfg, name):
  """(size, max_side) the task's data config asks for (`perceptual_inputs.data_canvas`)."""
  p = cfg.tasks[name].get("data", {}).get("perceptual", {}) or {}
  return int(p.get("size", 0)), int(p.get("max_side", 0))


def factory(**kw):
  return lambda cfg: {name: SyntheticImages(seed=cfg.seed + i, perceptual=perceptual_of(cfg, name),
                                            **kw)
                      for i, name in enumerate(cfg.tasks)}
