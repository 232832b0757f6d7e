"""Prepared dataset folders: built beside the destination, offered only when complete.

Layout: DST/<modality>/part-NNNNN.array_record and DST/manifest.json. The manifest is written
last; it counts the records of each modality and lists every shard with its size:

  {"format": 2, "counts": {"image": 12, ...},
   "shards": {"image": [{"file": "part-00000.array_record", "bytes": 34567}, ...]},
   ...what the writer adds (source, skipped files, ...)}

Building (`DatasetBuilder`) happens in a hidden folder beside DST (`.DST.building-XXXX`); shards
and manifest are flushed to disk, then the folder is renamed into place. With `overwrite`, the
old dataset stays readable until the new one is complete; then the two are swapped in one
atomic rename (Linux `renameat2(RENAME_EXCHANGE)`; elsewhere two renames, the old one parked
as `.DST.old-XXXX` for that instant and put back if the swap is interrupted) and the old one
is deleted. A build killed at any point leaves DST as it was; its temporary folder is removed
by the next build of DST. One build of a DST at a time (`.DST.lock`).

Reading (`check`): a folder with a manifest must hold exactly the shards it lists, of the
listed sizes; `sources` also checks the record counts when it opens them. A mismatch raises
`DatasetError` (a ValueError) with one line naming the shard.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import json
import os
import shutil
import tempfile
from typing import Optional

from data_pipelines.arrayrecord_io import DatasetError, ShardWriter

MANIFEST = "manifest.json"
FORMAT = 2
MODALITIES = ("image", "video", "voxels")
__all__ = ["DatasetBuilder", "DatasetError", "check", "write_manifest", "MANIFEST"]


def _is_shard(name: str) -> bool:
  return ".array_record" in name


def _shards_of(folder: str) -> list[str]:
  if not os.path.isdir(folder):
    return []
  return sorted(n for n in os.listdir(folder) if _is_shard(n)
                and os.path.isfile(os.path.join(folder, n)))


def _fsync(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def write_manifest(folder: str, manifest: dict, counts: dict) -> dict:
  """Lists the shards of `folder` into `manifest`, flushes shards and manifest to disk.

  Args:
    folder: the dataset folder being written (its shards are complete and closed).
    manifest: fields to store; "format", "counts" and "shards" are added.
    counts: records written per modality (as the writers counted them).

  Returns:
    The manifest as written.
  """
  shards = {}
  for m in MODALITIES:
    names = _shards_of(os.path.join(folder, m))
    if not names:
      continue
    listed = []
    for name in names:
      path = os.path.join(folder, m, name)
      _fsync(path)
      listed.append({"file": name, "bytes": os.path.getsize(path)})
    shards[m] = listed
  out = dict(manifest, format=FORMAT, counts=dict(counts), shards=shards)
  tmp = os.path.join(folder, MANIFEST + ".partial")
  with open(tmp, "w") as fh:
    json.dump(out, fh, indent=1)
    fh.flush()
    os.fsync(fh.fileno())
  os.replace(tmp, os.path.join(folder, MANIFEST))
  _fsync(folder)
  return out


def read_manifest(location: str) -> Optional[dict]:
  """DST/manifest.json as a dict, None when there is none. Raises DatasetError if unreadable."""
  path = os.path.join(location, MANIFEST)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, "rb") as fh:
      manifest = json.loads(fh.read().decode("utf-8"))
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise DatasetError(f"{path}: unreadable manifest ({type(e).__name__}: {e}); prepare the "
                       "dataset again") from None
  if not isinstance(manifest, dict) or not isinstance(manifest.get("counts", {}), dict):
    raise DatasetError(f"{path}: not a dataset manifest; prepare the dataset again")
  return manifest


def check(location: str) -> Optional[dict]:
  """Checks a prepared folder's shards against its manifest; returns the manifest (or None).

  Raises:
    DatasetError: a listed shard is missing or of another size, or a shard is not listed.
  """
  manifest = read_manifest(location)
  if manifest is None:
    return None
  shards = manifest.get("shards")
  if not isinstance(shards, dict):  # format 1 (no shard list): `sources` checks the counts
    return manifest
  for m in sorted(set(shards) | {m for m in MODALITIES if _shards_of(os.path.join(location, m))}):
    listed = shards.get(m, [])
    names = {s.get("file") for s in listed if isinstance(s, dict)}
    for extra in _shards_of(os.path.join(location, m)):
      if extra not in names:
        raise DatasetError(f"dataset {location}: {m}/{extra} is not in its manifest; prepare "
                           "the dataset again")
    for s in listed:
      rel = os.path.join(m, str(s.get("file")))
      path = os.path.join(location, rel)
      if not os.path.isfile(path):
        raise DatasetError(f"dataset {location}: shard {rel} is missing; prepare the dataset "
                           "again")
      size = os.path.getsize(path)
      if size != s.get("bytes"):
        raise DatasetError(f"dataset {location}: shard {rel} has {size} bytes, the manifest "
                           f"says {s.get('bytes')} (truncated or replaced); prepare the dataset "
                           "again")
  return manifest


def check_count(location: str, manifest: Optional[dict], modality: str, found: int) -> None:
  """Refuses a modality whose shards hold another number of records than the manifest says."""
  if manifest is None:
    return
  expected = manifest.get("counts", {}).get(modality, 0)
  if found != expected:
    raise DatasetError(f"dataset {location}: {modality}/ holds {found} records, the manifest "
                       f"says {expected} (an interrupted write?); prepare the dataset again")


def _exchange(a: str, b: str) -> bool:
  """Atomically swaps two paths (Linux renameat2); False where unsupported."""
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (AttributeError, OSError):
    return False
  at_fdcwd, rename_exchange = -100, 2
  if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
    return True
  err = ctypes.get_errno()
  if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
    return False
  raise OSError(err, os.strerror(err), b)


def _foreign_entry(folder: str) -> Optional[str]:
  """The first entry of `folder` that is not part of a prepared dataset, or None."""
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if name == MANIFEST and os.path.isfile(path):
      continue
    if name in MODALITIES and os.path.isdir(path):
      other = [n for n in os.listdir(path) if not _is_shard(n)]
      if not other:
        continue
      return os.path.join(name, sorted(other)[0])
    return name
  return None


class DatasetBuilder:
  """Writes a dataset into a hidden folder beside `dst`; `commit` puts it in place.

  Usage:
    with DatasetBuilder(dst, overwrite) as b:
      w = b.shard_writer("image"); w.write(record); ...
      b.commit({"source": ...}, counts)
  Leaving the block without `commit` (an exception) deletes the partial build.

  Raises (at construction): DatasetError when `dst` is a file, holds a dataset and
  `overwrite` is False, holds anything but a dataset, or is being built by another process.
  """

  def __init__(self, dst: str, overwrite: bool = False):
    self.dst = os.path.realpath(dst)  # a symlinked dst: build and swap beside its target
    self.overwrite = overwrite
    parent, name = os.path.split(self.dst)
    self._prefix = os.path.join(parent, f".{name}.")
    if os.path.exists(self.dst) and not os.path.isdir(self.dst):
      raise DatasetError(f"{dst} is a file, not a folder: choose a folder for the dataset")
    os.makedirs(parent, exist_ok=True)
    self._lock = open(self._prefix + "lock", "w")
    try:
      fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._lock.close()
      raise DatasetError(f"{dst}: another `atoken data prepare` is writing it") from None
    try:
      self._recover()
      self._check_destination(dst)
      self.path = tempfile.mkdtemp(prefix=os.path.basename(self._prefix) + "building-",
                                   dir=parent)
    except BaseException:
      self._release()
      raise
    self._writers: dict[str, ShardWriter] = {}
    self.committed = False

  def _recover(self) -> None:
    """Removes stale builds of this dst; puts back an old dataset parked by a broken swap."""
    for stale in glob.glob(glob.escape(self._prefix) + "building-*"):
      shutil.rmtree(stale, ignore_errors=True)
    parked = sorted(glob.glob(glob.escape(self._prefix) + "old-*"))
    if parked and not os.path.exists(self.dst):
      os.rename(parked.pop(), self.dst)
    for old in parked:  # an overwrite swapped in completely; this is the replaced dataset
      shutil.rmtree(old, ignore_errors=True)

  def _check_destination(self, dst: str) -> None:
    if not os.path.isdir(self.dst) or not os.listdir(self.dst):
      return
    has_manifest = os.path.isfile(os.path.join(self.dst, MANIFEST))
    if has_manifest and not self.overwrite:
      raise DatasetError(f"{dst} already holds a prepared dataset (use --overwrite)")
    foreign = _foreign_entry(self.dst)
    if foreign is not None:
      raise DatasetError(f"{dst} holds {foreign!r}, which is not part of a prepared dataset: "
                         "choose a new or empty folder")
    if not self.overwrite:
      raise DatasetError(f"{dst} holds the shards of an incomplete dataset (use --overwrite)")

  def shard_writer(self, modality: str, shard_bytes: int = 512 << 20) -> ShardWriter:
    """The (one) writer of `modality`'s shards in the temporary folder."""
    if modality not in self._writers:
      self._writers[modality] = ShardWriter(os.path.join(self.path, modality), shard_bytes)
    return self._writers[modality]

  def commit(self, manifest: dict, counts: dict) -> dict:
    """Closes the writers, writes the manifest, puts the dataset at dst; returns the manifest."""
    for w in self._writers.values():
      w.close()
    written = write_manifest(self.path, manifest, counts)
    if os.path.isdir(self.dst):
      if _exchange(self.path, self.dst):  # self.path now holds the old dataset (or empty dir)
        shutil.rmtree(self.path, ignore_errors=True)
      else:
        parked = tempfile.mkdtemp(prefix=os.path.basename(self._prefix) + "old-",
                                  dir=os.path.dirname(self.dst))
        os.rmdir(parked)
        os.rename(self.dst, parked)
        os.rename(self.path, self.dst)
        shutil.rmtree(parked, ignore_errors=True)
    else:
      os.rename(self.path, self.dst)
    _fsync(os.path.dirname(self.dst))
    self.committed = True
    self._release()
    return written

  def _release(self) -> None:
    if self._lock is not None:
      fcntl.flock(self._lock, fcntl.LOCK_UN)
      self._lock.close()
      self._lock = None

  def abort(self) -> None:
    """Deletes the partial build (dst is untouched)."""
    for w in self._writers.values():
      try:
        w.close()
      except Exception:  # noqa: BLE001 - the build is being thrown away
        pass
    shutil.rmtree(self.path, ignore_errors=True)
    self._release()

  def __enter__(self) -> "DatasetBuilder":
    return self

  def __exit__(self, *exc) -> None:
    if not self.committed:
      self.abort()

