"""Decoded pictures and clips kept for reuse inside one worker, the least recently used dropped
past a byte budget: for a dataset that fits in memory and is read again every epoch (the
bundled data), where decoding, not the model, would bound the step. Entries are keyed by a
digest of the encoded file (plus what else decides the decoded result), so a hit returns
exactly what decoding would; they are shared, so callers must not modify them.
"""
from __future__ import annotations

import collections
import hashlib
import threading
from typing import Any, Hashable, Optional


def digest(data: bytes) -> bytes:
  return hashlib.blake2b(data, digest_size=16).digest()


class DecodedCache:
  """An LRU map of decoded media, at most `max_bytes` of values in all; safe to share between
  a worker's read threads. It pickles as an empty cache of the same budget, so each worker
  process starts its own."""

  def __init__(self, max_bytes: int):
    self.max_bytes = int(max_bytes)
    self._items: collections.OrderedDict = collections.OrderedDict()
    self._bytes = 0
    self._lock = threading.Lock()
    self.hits = self.misses = 0

  def __reduce__(self):
    return DecodedCache, (self.max_bytes,)

  def __len__(self) -> int:
    return len(self._items)

  def get(self, key: Hashable) -> Optional[Any]:
    with self._lock:
      entry = self._items.get(key)
      if entry is None:
        self.misses += 1
        return None
      self._items.move_to_end(key)
      self.hits += 1
      return entry[0]

  def put(self, key: Hashable, value: Any, nbytes: int) -> None:
    with self._lock:
      if nbytes > self.max_bytes or key in self._items:
        return
      self._items[key] = (value, int(nbytes))
      self._bytes += int(nbytes)
      while self._bytes > self.max_bytes:
        _, (_, size) = self._items.popitem(last=False)
        self._bytes -= size
