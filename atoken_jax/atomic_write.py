"""The one way an output file is written: to a temporary name beside it, then renamed.

A full disk, a kill or an exception never leaves a half-written file under the final name, and
never replaces an existing one with a partial file.
"""
from __future__ import annotations

import os
from typing import Callable


def write_atomic(path: str, write: Callable[[str], object]) -> None:
  """write(tmp) then rename onto `path`; tmp keeps path's extension (writers choose the format
  by it) and gets the user's usual mode (some writers create 0600 files)."""
  root, ext = os.path.splitext(os.fspath(path))
  tmp = f"{root}.partial{ext}"
  try:
    write(tmp)
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask
