"""Plain folders of images, videos and 3D assets as random-access sources.

`scan_folder(root)` walks `root` (sorted, so the index order is stable) and sorts files by
extension into modalities:
  image:  .jpg .jpeg .png .webp .bmp .gif .tif .tiff
  video:  .mp4 .webm .mov .mkv .avi .m4v
  voxels: meshes (.glb .gltf .obj .ply .stl .off) and folders holding a NeRF `transforms.json`
          (files inside such a folder are not listed separately).
A caption is the sidecar text file with the same stem (`cat.jpg` -> `cat.txt`; a NeRF folder
`chair/` -> `chair/caption.txt` or `chair.txt`).

`FolderSource(root, items)[i]` reads item i lazily and returns a record dict as the pipeline
expects; a file that cannot be read gives {"kind": "error", ...} (counted as bad data).
"""
from __future__ import annotations

import os
from typing import Any

from data_pipelines.assets3d import MESH_EXTS

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")


def scan_folder(root: str) -> dict[str, list[str]]:
  """root -> {"image": [relpath...], "video": [...], "voxels": [...]} (sorted relpaths)."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"not a folder: {root}")
  out: dict[str, list[str]] = {"image": [], "video": [], "voxels": []}
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    rel_dir = os.path.relpath(dirpath, root)
    if "transforms.json" in filenames:
      out["voxels"].append(rel_dir)
      dirnames[:] = []  # its renders belong to the asset
      continue
    for name in sorted(filenames):
      ext = os.path.splitext(name)[1].lower()
      rel = os.path.normpath(os.path.join(rel_dir, name))
      if ext in IMAGE_EXTS:
        out["image"].append(rel)
      elif ext in VIDEO_EXTS:
        out["video"].append(rel)
      elif ext in MESH_EXTS:
        out["voxels"].append(rel)
  return {k: sorted(v) for k, v in out.items()}


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
