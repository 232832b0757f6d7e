"""Plain folders of images, videos and 3D assets as random-access sources.

`scan_folder(root)` walks `root` (sorted, so the index order is stable; symlinked folders are
followed, loops detected and reported) and sorts files by extension into modalities:
  image:  .jpg .jpeg .png .webp .bmp .gif .tif .tiff
  video:  .mp4 .webm .mov .mkv .avi .m4v, and animated .gif / .webp
  voxels: meshes (.glb .gltf .obj .ply .stl .off) and folders holding a NeRF `transforms.json`
          (files inside such a folder are not listed separately).
A caption is the sidecar text file with the same stem (`cat.jpg` -> `cat.txt`; a NeRF folder
`chair/` -> `chair/caption.txt` or `chair.txt`).

`FolderSource(root, items)[i]` reads item i lazily and returns a record dict as the pipeline
expects; a file that cannot be read gives {"kind": "error", ...} (counted as bad data).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterator, Optional

from data_pipelines import image_decode
from data_pipelines.assets3d import MESH_EXTS

_log = logging.getLogger("data_pipelines")

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
ANIMATED_EXTS = (".gif", ".webp")  # a video when the file has more than one frame


def walk(root: str, problems: Optional[list] = None
         ) -> Iterator[tuple[str, list[str], list[str]]]:
  """Like `os.walk(root)` (sorted, top-down) but follows symlinked folders, each real folder once.

  A folder reached again through a symlink is not entered: as "symlink_loop" when it is one of
  its own ancestors, as "duplicate_folder" otherwise; a folder that cannot be listed is
  "unreadable_folder". Each case is appended to `problems` as
  {"file", "reason", "message"} or, when `problems` is None, logged as a warning. Callers may
  prune `dirnames` in place.

  Yields:
    (path relative to root, sorted dirnames, sorted filenames), "." for root itself.
  """
  seen: dict[tuple[int, int], str] = {}

  def report(rel: str, reason: str, message: str) -> None:
    if problems is None:
      _log.warning("%s: %s (%s)", os.path.join(root, rel), message, reason)
    else:
      problems.append({"file": rel, "reason": reason, "message": message})

  def unreadable(error: OSError) -> None:
    rel = os.path.normpath(os.path.relpath(error.filename or root, root))
    report(rel, "unreadable_folder", error.strerror or str(error))

  for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
    rel_dir = os.path.normpath(os.path.relpath(dirpath, root))
    try:
      st = os.stat(dirpath)
    except OSError:
      dirnames[:] = []
      continue
    key = (st.st_dev, st.st_ino)
    first = seen.setdefault(key, rel_dir)
    if first != rel_dir:
      dirnames[:] = []
      loop = first == "." or rel_dir.startswith(first + os.sep)
      reason = "symlink_loop" if loop else "duplicate_folder"
      report(rel_dir, reason, f"links back to its ancestor {first!r}; not followed" if loop
             else f"same folder as {first!r}; read once, there")
      continue
    dirnames.sort()
    yield rel_dir, dirnames, sorted(filenames)


def scan_folder(root: str, problems: Optional[list] = None) -> dict[str, list[str]]:
  """root -> {"image": [relpath...], "video": [...], "voxels": [...]} (sorted relpaths).

  Symlinked folders are followed (see `walk`: loops and duplicates go to `problems`). Animated
  GIF / WebP files are videos; still ones are images.
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(f"not a folder: {root}")
  out: dict[str, list[str]] = {"image": [], "video": [], "voxels": []}
  for rel_dir, dirnames, filenames in walk(root, problems):
    if "transforms.json" in filenames:
      out["voxels"].append(rel_dir)
      dirnames[:] = []  # its renders belong to the asset
      continue
    for name in filenames:
      rel = os.path.normpath(os.path.join(rel_dir, name))
      modality = modality_of(os.path.join(root, rel))
      if modality is not None:
        out[modality].append(rel)
  return {k: sorted(v) for k, v in out.items()}


def modality_of(path: str) -> Optional[str]:
  """A file's modality by extension ("image", "video", "voxels"; animated GIF/WebP: "video"),
  or None for other files."""
  ext = os.path.splitext(path)[1].lower()
  if ext in ANIMATED_EXTS and image_decode.is_animated(path):
    return "video"
  if ext in IMAGE_EXTS:
    return "image"
  if ext in VIDEO_EXTS:
    return "video"
  if ext in MESH_EXTS:
    return "voxels"
  return None


def read_caption(path: str) -> Any:
  """The sidecar caption of a file or NeRF folder, or None."""
  if os.path.isdir(path):
    candidates = [os.path.join(path, "caption.txt"), path.rstrip("/") + ".txt"]
  else:
    candidates = [os.path.splitext(path)[0] + ".txt"]
  for c in candidates:
    if os.path.isfile(c):
      with open(c, "rb") as fh:
        return fh.read().decode("utf-8", errors="replace").strip() or None
  return None


def read_item(root: str, rel: str, modality: str) -> dict[str, Any]:
  """One folder item -> record dict ({"kind", "name", "caption", ...fields})."""
  path = os.path.join(root, rel)
  record: dict[str, Any] = {"kind": modality, "name": path}
  try:
    record["caption"] = read_caption(path)
    if os.path.isdir(path):
      record["nerf_dir"] = path
      return record
    with open(path, "rb") as fh:
      data = fh.read()
  except OSError as e:
    return {"kind": "error", "name": path, "error": f"unreadable: {e}"}
  if modality == "voxels":
    record["mesh_bytes"], record["ext"] = data, os.path.splitext(path)[1]
  else:
    record["bytes"] = data
  return record


class FolderSource:
  """Random access over one modality's items of a scanned folder."""

  def __init__(self, root: str, items: list[str], modality: str):
    self.root, self.items, self.modality = root, list(items), modality

  def __len__(self) -> int:
    return len(self.items)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return read_item(self.root, self.items[index], self.modality)
