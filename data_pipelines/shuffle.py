"""Per-epoch global shuffle of a finite MapDataset, cheap for small datasets too.

Grain's `MapDataset.shuffle` computes each index with a stateless bijection; for very small
datasets that costs milliseconds per element (≈3 ms at 17 records vs ≈10 µs at 10^6 on our CPU).
`shuffle(ds, seed)` keeps Grain's for large datasets and, up to `SMALL` records, uses an explicit
permutation per epoch (drawn from (seed, epoch), cached), with the same index semantics: index
`epoch * n + i` reads the parent at `epoch * n + perm_epoch[i]`, so `repeat()` downstream gives
a different order every epoch.
"""
from __future__ import annotations

import grain
import numpy as np

SMALL = 1 << 16


class _PermutedMapDataset(grain.MapDataset):
  """An explicit permutation per epoch; for small datasets."""

  def __init__(self, parent: grain.MapDataset, seed: int):
    super().__init__(parent)
    self._seed = int(seed)
    self._perms: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    return len(self._parent)

  def __str__(self) -> str:
    return f"PermutedMapDataset(seed={self._seed})"

  def _perm(self, epoch: int) -> np.ndarray:
    perm = self._perms.get(epoch)
    if perm is None:
      perm = np.random.default_rng([self._seed, epoch]).permutation(len(self._parent))
      if len(self._perms) > 2:
        self._perms.clear()
      self._perms[epoch] = perm
    return perm

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    n = len(self._parent)
    epoch, i = divmod(int(index), n)
    return self._parent[epoch * n + int(self._perm(epoch)[i])]


def shuffle(ds: grain.MapDataset, seed: int) -> grain.MapDataset:
  """A shuffled view of finite `ds`, reshuffled every epoch."""
  if len(ds) <= SMALL:
    return _PermutedMapDataset(ds, seed)
  return ds.shuffle(seed=seed % 2 ** 32)
