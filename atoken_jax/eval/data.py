"""Evaluation data: folders or TFDS data sources -> `EvalItem`s under the paper's protocols (§7).

A task's `data` section names one source:

  folder: ROOT          images / videos / 3D assets found recursively (sorted, stable order).
                        Labels (classification tasks) are the first sub-folder: ROOT/<class>/...
                        Captions (retrieval tasks) are sidecar text files (`x.jpg` -> `x.txt`),
                        one caption per line.
  tfds: NAME_OR_DIR     a TFDS dataset prepared as ArrayRecord (no TensorFlow needed), with
                        split, data_dir, and the feature keys image_key / video_key / label_key /
                        caption_key (nested keys with "/", e.g. "captions/text").
  limit: N              the first N items only (0 = all).
  classnames: FILE      class names, one per line in label order (or a JSON {folder: name});
                        default: TFDS label names, or folder names with "_" -> " ".

A task's `max_pixels` (default 1024 x 1024 per frame; 0 = no limit) and `on_oversize` ("resize"
or "refuse": a counted skip) bound what the native-resolution protocols hand the tokenizer
(`atoken_jax.pixel_budget`). Files are decoded with `data_pipelines.decode` (the training
pipeline's decoders). Pixels stay uint8 here; `to_unit_range` maps them to the tokenizer's
[-1, 1].
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from atoken_jax.pixel_budget import OverBudget, PixelBudget
from atoken_jax.tokens import Voxels

_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS,
             "box": Image.BOX}


@dataclasses.dataclass
class EvalItem:
  """One evaluation sample.

  Attributes:
    name: file path or "dataset:id".
    pixels: uint8 image [H, W, 3] or video [T, H, W, 3]; None for 3D.
    voxels: a `Voxels` set for 3D assets.
    label: class index (classification), -1 if none.
    captions: the item's captions (retrieval).
  """
  name: str
  pixels: np.ndarray | None = None
  voxels: Voxels | None = None
  label: int = -1
  captions: tuple[str, ...] = ()


def to_unit_range(pixels: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [-1, 1] (``x / 127.5 − 1``)."""
  return np.asarray(pixels, np.float32) / np.float32(127.5) - np.float32(1.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
  """[-1, 1] float -> uint8, clipped and rounded (what saving a reconstruction does)."""
  return np.round((np.clip(np.asarray(x, np.float32), -1, 1) + 1) * 127.5).astype(np.uint8)


# --------------------------------------------------------------------------- pixel protocols


def resize_center_crop(img: Image.Image, size: int, resample: str = "bicubic") -> np.ndarray:
  """The reconstruction protocol: shorter side -> `size` (antialiased), centre crop size x size."""
  w, h = img.size
  s = size / min(w, h)
  nw, nh = max(size, round(w * s)), max(size, round(h * s))
  img = img.resize((nw, nh), _RESAMPLE[resample])
  left, top = (nw - size) // 2, (nh - size) // 2
  return np.asarray(img.crop((left, top, left + size, top + size)))


def resize_square(img: Image.Image, size: int, resample: str = "bilinear") -> np.ndarray:
  """The understanding protocol (SigLIP): the whole image squeezed to size x size."""
  return np.asarray(img.resize((size, size), _RESAMPLE[resample]))


def preprocess_image(img: Image.Image, mode: str, size: int, resample: str) -> np.ndarray:
  """mode: "resize_center_crop" | "resize" | "native" (centre crop to multiples of 16)."""
  if mode == "resize_center_crop":
    return resize_center_crop(img, size, resample)
  if mode == "resize":
    return resize_square(img, size, resample)
  if mode == "native":
    return crop_to_multiple(np.asarray(img))
  raise ValueError(f"unknown image protocol {mode!r} (resize_center_crop | resize | native)")


def crop_to_multiple(x: np.ndarray, multiple: int = 16, max_side: int = 0) -> np.ndarray:
  """Centre-crops the two axes before the channel axis to multiples of `multiple` (1080 -> 1072);
  with `max_side`, first crops the longer side to at most max_side."""
  h, w = x.shape[-3], x.shape[-2]
  th, tw = (min(h, max_side), min(w, max_side)) if max_side else (h, w)
  th, tw = th - th % multiple, tw - tw % multiple
  top, left = (h - th) // 2, (w - tw) // 2
  return x[..., top:top + th, left:left + tw, :]


# --------------------------------------------------------------------------- sources



def _texts(value: Any) -> tuple[str, ...]:
  if value is None:
    return ()
  if isinstance(value, (bytes, str)):
    value = [value]
  out = []
  for v in np.asarray(value, dtype=object).ravel().tolist():
    v = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    out.extend(line.strip() for line in v.splitlines() if line.strip())
  return tuple(out)


def _folder_files(root: str, modality: str) -> list[str]:
  from data_pipelines import folder_source  # pylint: disable=import-outside-toplevel
  files = folder_source.scan_folder(root)[modality]
  if modality == "voxels":  # also prepared voxel sets: .npz with coords [N, 3], feats [N, 768]
    for rel_dir, _, filenames in folder_source.walk(root, problems=[]):  # scan logged them
      files += [os.path.normpath(os.path.join(rel_dir, f)) for f in filenames
                if f.endswith(".npz")]
  return sorted(files)


def class_names(data_cfg, folders: Sequence[str] = (), tfds_names: Sequence[str] = ()
                ) -> list[str]:
  """Display names of the classes, in label order (see module docstring)."""
  path = data_cfg.get("classnames", "") if hasattr(data_cfg, "get") else ""
  if path:
    with open(path) as f:
      text = f.read()
    if path.endswith(".json"):
      mapping = json.loads(text)
      return [mapping[k] for k in folders] if folders else list(mapping.values())
    return [line.strip() for line in text.splitlines() if line.strip()]
  names = list(folders) or list(tfds_names)
  return [n.replace("_", " ") for n in names]


@dataclasses.dataclass
class Source:
  """Random access to records in `data_pipelines` format plus labels and class names."""
  records: Any            # len() and [i] -> record dict
  labels: list[int]
  classes: list[str]

  def __len__(self):
    return len(self.records)


class _FolderRecords:
  def __init__(self, root, files, modality):
    self.root, self.files, self.modality = root, files, modality

  def __len__(self):
    return len(self.files)

  def __getitem__(self, i):
    from data_pipelines import folder_source  # pylint: disable=import-outside-toplevel
    rel = self.files[i]
    path = os.path.join(self.root, rel)
    if self.modality == "voxels" and rel.endswith(".npz"):
      with np.load(path, allow_pickle=False) as z:
        return {"kind": "voxels", "name": path, "coords": z["coords"], "feats": z["feats"],
                "caption": folder_source.read_caption(path)}
    return folder_source.read_item(self.root, rel, self.modality)


class _TfdsRecords:
  def __init__(self, source, modality, data_cfg):
    self.source, self.modality, self.cfg = source, modality, data_cfg

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    from data_pipelines import tfds_source  # pylint: disable=import-outside-toplevel
    feats = self.source[i]
    key = self.cfg.image_key if self.modality == "image" else self.cfg.video_key
    pixels = np.asarray(tfds_source.lookup(feats, key))
    field = "pixels" if self.modality == "image" else "frames"
    caption = tfds_source.lookup(feats, self.cfg.caption_key) if self.cfg.caption_key else None
    return {"kind": self.modality, "name": f"{self.cfg.tfds}#{i}", field: pixels,
            "caption": _texts(caption)}


def open_source(data_cfg, modality: str, with_labels: bool = False) -> Source:
  """A task's `data` config -> `Source` of `modality` ("image" | "video" | "voxels")."""
  limit = int(data_cfg.get("limit", 0) or 0)
  if data_cfg.get("folder", ""):
    root = data_cfg.folder
    files = _folder_files(root, modality)
    folders, labels = [], []
    if with_labels:
      top = [f.split(os.sep)[0] for f in files]
      files = [f for f, t in zip(files, top) if t != f]  # only files inside class folders
      folders = sorted({f.split(os.sep)[0] for f in files})
      labels = [folders.index(f.split(os.sep)[0]) for f in files]
    if limit:
      files, labels = files[:limit], labels[:limit]
    if not files:
      raise FileNotFoundError(f"no {modality} files under {root}")
    return Source(_FolderRecords(root, files, modality), labels,
                  class_names(data_cfg, folders) if with_labels else [])
  if data_cfg.get("tfds", ""):
    from data_pipelines import tfds_source  # pylint: disable=import-outside-toplevel
    src = tfds_source.tfds_source(data_cfg.tfds, data_cfg.get("split", "validation"),
                                  data_cfg.get("data_dir", ""))
    n = min(len(src), limit) if limit else len(src)
    labels, names = [], []
    if with_labels:
      labels = [int(tfds_source.lookup(src[i], data_cfg.label_key)) for i in range(n)]
      names = _tfds_label_names(src, data_cfg.label_key)
    records = _TfdsRecords(src, modality, data_cfg)
    return Source(_Subset(records, n), labels, class_names(data_cfg, tfds_names=names)
                  if with_labels else [])
  raise ValueError("a task's data needs `folder` or `tfds`")


def _tfds_label_names(src, key: str) -> list[str]:
  """ClassLabel names of feature `key` ("a/b" nested) of a TFDS data source, or []."""
  feature = getattr(getattr(src, "dataset_info", None), "features", None)
  for part in key.split("/"):
    try:
      feature = feature[part]
    except (KeyError, TypeError):
      return []
  return list(getattr(feature, "names", None) or [])


class _Subset:
  def __init__(self, records, n):
    self.records, self.n = records, n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    if not 0 <= i < self.n:
      raise IndexError(i)
    return self.records[i]


# --------------------------------------------------------------------------- decoding


def read_image(record: dict, mode: str, size: int, resample: str,
               budget: PixelBudget | None = None) -> np.ndarray:
  """Record -> uint8 [size, size, 3] (or native size within `budget`, cropped to multiples of
  16; over the budget with on_oversize="refuse": skipped as "over_pixel_budget")."""
  from data_pipelines import decode  # pylint: disable=import-outside-toplevel
  img = decode.decode_image(record)
  if mode == "native" and budget is not None:
    img = _within(budget, lambda: budget.image(img, str(record.get("name", "image"))))
  return preprocess_image(img, mode, size, resample)


def _within(budget: PixelBudget, fn):
  from data_pipelines.decode import BadData  # pylint: disable=import-outside-toplevel
  try:
    return fn()
  except OverBudget as e:
    raise BadData("over_pixel_budget", str(e)) from None


def read_video(record: dict, num_frames: int, sampling: str = "first", max_side: int = 0,
               budget: PixelBudget | None = None) -> np.ndarray:
  """Record -> uint8 [T, H, W, 3] at native resolution, centre-cropped to multiples of 16 (and
  to `max_side`), each frame within `budget` (as `read_image`).

  sampling: "first" (the first `num_frames` consecutive frames, for reconstruction) or
  "uniform" (`num_frames` spread over the whole video, for retrieval). num_frames 0 = all.
  """
  from data_pipelines import decode  # pylint: disable=import-outside-toplevel

  def choose(total, fps):
    del fps
    n = total if num_frames <= 0 else min(total, num_frames)
    if sampling == "uniform" and n < total:
      return sorted(set(np.linspace(0, total - 1, n).round().astype(int).tolist()))
    return list(range(n))

  frames, _ = decode.video_frames(record, choose)
  video = crop_to_multiple(np.stack(frames), 16, max_side)
  if budget is None:
    return video
  return _within(budget, lambda: budget.frames(video, str(record.get("name", "video"))))


def read_voxels(record: dict, num_views: int = 150, seed: int = 0) -> Voxels:
  """Record (prepared coords/feats, mesh, NeRF folder, or prepared views) -> `Voxels`."""
  if "feats" in record:
    return Voxels(np.asarray(record["coords"]), np.asarray(record["feats"], np.float32))
  from data_pipelines import decode, voxelize  # pylint: disable=import-outside-toplevel
  asset = decode.voxel_asset(record, num_views, seed)
  return Voxels(asset.coords.astype(np.int32), voxelize.voxel_feats(asset.src, asset.views))


def iter_items(source: Source, read, skipped: list | None = None) -> Iterator[EvalItem]:
  """Reads `source` in order; `read(record)` -> uint8 pixels or `Voxels`. Items that cannot be
  decoded are skipped and described in `skipped` ("name: reason")."""
  from data_pipelines.decode import BadData  # pylint: disable=import-outside-toplevel
  for i in range(len(source)):
    record = source.records[i]
    name = str(record.get("name", i))
    try:
      if record.get("kind") == "error":
        raise BadData("decode_error", str(record.get("error", "")))
      value = read(record)
    except BadData as e:
      if skipped is not None:
        skipped.append(f"{name}: {e}")
      continue
    label = source.labels[i] if source.labels else -1
    captions = _texts(record.get("caption"))
    if isinstance(value, Voxels):
      yield EvalItem(name, voxels=value, label=label, captions=captions)
    else:
      yield EvalItem(name, pixels=value, label=label, captions=captions)
