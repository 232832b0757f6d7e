"""Our ArrayRecord shards: a rotating shard writer and a random-access reader.

A prepared dataset directory holds one sub-folder per modality, each with shards written here:

  DST/image/part-00000.array_record, DST/video/..., DST/voxels/..., DST/manifest.json

Every record is an `records.encode_record` blob. Shards use `group_size:1` so that reading one
record decompresses only that record (random access is what shuffling needs).
"""
from __future__ import annotations

import bisect
import glob
import os
from typing import Any, Sequence

from array_record.python import array_record_module

SHARD_PATTERN = "part-{:05d}.array_record"
WRITER_OPTIONS = "group_size:1"


class DatasetError(ValueError):
  """A dataset that must not be read (or written) as it is: the message says why, in one line."""


class ShardWriter:
  """Writes records to `directory/part-NNNNN.array_record`, starting a new shard past a size.

  Usage: `with ShardWriter(dir) as w: w.write(record_bytes)`; `w.paths` lists the shards.
  """

  def __init__(self, directory: str, shard_bytes: int = 512 << 20):
    self.directory = directory
    self.shard_bytes = shard_bytes
    self.paths: list[str] = []
    self.num_records = 0
    self._writer = None
    self._bytes = 0
    os.makedirs(directory, exist_ok=True)

  def _open(self) -> None:
    path = os.path.join(self.directory, SHARD_PATTERN.format(len(self.paths)))
    self._writer = array_record_module.ArrayRecordWriter(path, WRITER_OPTIONS)
    self.paths.append(path)
    self._bytes = 0

  def write(self, record: bytes) -> None:
    """Appends one record (bytes) to the current shard."""
    if self._writer is None or self._bytes >= self.shard_bytes:
      self.close()
      self._open()
    self._writer.write(record)
    self._bytes += len(record)
    self.num_records += 1

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self) -> "ShardWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def find_shards(location: str) -> list[str]:
  """Shard paths of a location: a file, a glob, or a directory of `*.array_record*` files."""
  if os.path.isdir(location):
    paths = glob.glob(os.path.join(location, "*.array_record*"))
  elif any(c in location for c in "*?["):
    paths = glob.glob(location)
  else:
    paths = [location] if os.path.exists(location) else []
  return sorted(p for p in paths if os.path.isfile(p))


class RecordSource:
  """Random-access source over ArrayRecord shards: `src[i]` -> record bytes, or an error dict.

  A shard that cannot be opened raises `DatasetError` at construction; a record that
  cannot be read yields {"kind": "error", "name": "<shard>#<i>", "error": message}, which the
  pipeline counts as bad data. Picklable (Grain worker processes reopen the shards).
  """

  def __init__(self, paths: Sequence[str]):
    if not paths:
      raise FileNotFoundError("RecordSource needs at least one ArrayRecord shard")
    self.paths = list(paths)
    self._open()

  def _open(self) -> None:
    self._readers = []
    for p in self.paths:
      try:
        self._readers.append(array_record_module.ArrayRecordReader(p))
      except Exception as e:  # noqa: BLE001 - the C++ reader raises plain errors
        raise DatasetError(f"shard {p} cannot be opened ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); is it truncated?"
                           ) from None
    self._starts, total = [], 0
    for r in self._readers:
      self._starts.append(total)
      total += r.num_records()
    self._len = total

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> Any:
    if not 0 <= index < self._len:
      raise IndexError(f"record {index} out of range [0, {self._len})")
    shard = bisect.bisect_right(self._starts, index) - 1  # empty shards share a start
    local = index - self._starts[shard]
    try:
      return self._readers[shard].read([local])[0]
    except Exception as e:  # noqa: BLE001 - a corrupt record is data, not a crash
      name = f"{self.paths[shard]}#{local}"
      return {"kind": "error", "name": name, "error": f"unreadable record: {e}"}

  def __getstate__(self):
    return {"paths": self.paths}

  def __setstate__(self, state):
    self.paths = state["paths"]
    self._open()
