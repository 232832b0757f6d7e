"""Source specs -> Grain MapDatasets of tagged elements (record_id, modality, raw).

A task reads every (source spec, modality) pair that has data: `resolve_parts(cfg)` returns one
`Part` per pair, in order (sources outer, modalities inner); `pipeline.py` shards, shuffles and
mixes them. `raw` is record bytes (ArrayRecord), a record dict (folders, TFDS) or an error dict.
See `config.py` for the spec syntax.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import grain

from data_pipelines import arrayrecord_io, dataset_dir, folder_source, tfds_source


@dataclasses.dataclass
class Part:
  """One (source, modality) stream: `dataset[i]` = (i, modality, raw)."""
  dataset: grain.MapDataset
  modality: str
  description: str

  def __len__(self) -> int:
    return len(self.dataset)


class _Tag:
  """map_with_index: (i, raw) -> (i mod len, modality, adapter(i, raw) or raw).

  Grain passes indices past the end in later epochs (sources read them modulo their length).
  """

  def __init__(self, modality: str, length: int, adapter: Optional[Any] = None):
    self.modality, self.length, self.adapter = modality, length, adapter

  def __call__(self, index: int, raw: Any):
    index = index % self.length
    if self.adapter is not None:
      try:
        raw = self.adapter(index, raw)
      except Exception as e:  # noqa: BLE001 - a record the adapter cannot read is bad data
        raw = {"kind": "error", "name": f"record {index}", "error": f"{type(e).__name__}: {e}"}
    return index, self.modality, raw


class _SafeSource:
  """Wraps a random-access source so that a failing read becomes an error record."""

  def __init__(self, source: Any, name: str):
    self.source, self.name = source, name

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> Any:
    try:
      return self.source[index]
    except Exception as e:  # noqa: BLE001 - unreadable record -> counted bad data
      return {"kind": "error", "name": f"{self.name}#{index}", "error": f"{type(e).__name__}: {e}"}


def _part(source, modality: str, description: str, adapter=None) -> Part:
  ds = grain.MapDataset.source(_SafeSource(source, description))
  return Part(ds.map_with_index(_Tag(modality, max(len(ds), 1), adapter)), modality,
              description)


def _arrayrecord_parts(location: str, modalities) -> list[Part]:
  """A prepared folder (checked against its manifest) or a plain shard directory / glob."""
  if os.path.isfile(location) and ".array_record" not in os.path.basename(location):
    raise dataset_dir.DatasetError(f"arrayrecord:{location} is a file, not a dataset folder "
                                   "or shard")
  manifest = dataset_dir.check(location) if os.path.isdir(location) else None
  parts = []
  for m in modalities:
    shards = arrayrecord_io.find_shards(os.path.join(location, m))
    source = arrayrecord_io.RecordSource(shards) if shards else None
    dataset_dir.check_count(location, manifest, m, len(source) if source else 0)
    if source is not None:
      parts.append(_part(source, m, f"{location}/{m}"))
  if not parts and len(modalities) == 1:  # a plain shard directory or glob
    shards = arrayrecord_io.find_shards(location)
    if shards:
      source = arrayrecord_io.RecordSource(shards)
      parent, name = os.path.split(os.path.normpath(location))
      if os.path.isdir(location) and name in dataset_dir.MODALITIES:  # DST/<modality>
        dataset_dir.check_count(parent, dataset_dir.check(parent), name, len(source))
      parts.append(_part(source, modalities[0], location))
  return parts


def resolve_parts(cfg) -> list[Part]:
  """A task config -> its non-empty parts. Raises ValueError when no source has data."""
  modalities = tuple(cfg.modalities)
  parts: list[Part] = []
  for spec in cfg.sources:
    kind, _, location = spec.partition(":")
    if kind == "default":
      from data_pipelines import default_data  # pylint: disable=import-outside-toplevel
      root = default_data.ensure_default_dataset()
      if location not in ("", default_data.HELDOUT):
        raise ValueError(f"unknown source spec {spec!r}: expected default or default:heldout")
      parts += _arrayrecord_parts(os.path.join(root, location) if location else root, modalities)
    elif kind == "arrayrecord":
      parts += _arrayrecord_parts(location, modalities)
    elif kind == "folder":
      found = folder_source.scan_folder(location)
      for m in modalities:
        if found[m]:
          src = folder_source.FolderSource(location, found[m], m)
          parts.append(_part(src, m, f"{location} ({m})"))
    elif kind == "tfds":
      name, _, split = location.partition(":")
      source = tfds_source.tfds_source(name, split or "train", cfg.tfds.data_dir)
      adapter = tfds_source.TfdsAdapter(modalities[0], cfg.tfds, os.path.basename(name))
      parts.append(_part(source, modalities[0], f"tfds:{location}", adapter))
    else:
      raise ValueError(f"unknown source spec {spec!r}: expected default, arrayrecord:PATH, "
                       "folder:PATH or tfds:NAME[:SPLIT]")
  parts = [p for p in parts if len(p) > 0]
  if not parts:
    raise ValueError(f"task {cfg.name!r}: no {'/'.join(modalities)} data in sources "
                     f"{tuple(cfg.sources)}")
  return parts
