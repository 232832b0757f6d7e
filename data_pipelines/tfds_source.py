"""TFDS datasets read through TFDS data sources (ArrayRecord; no TensorFlow at training time).

`tfds_source("imagenet2012", "train", data_dir)` opens `tfds.data_source(...)`; a NAME that is a
directory is opened with `tfds.builder_from_directory(NAME).as_data_source(split)`. The dataset
must have been prepared with `file_format="array_record"`. TFDS decodes images to uint8 arrays
(and videos to [T, H, W, 3]); `TfdsAdapter` maps a feature dict to our record dict using the
task's `tfds` config keys (nested features with "/", e.g. "captions/text").
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np


def tfds_source(name: str, split: str, data_dir: str = ""):
  """A random-access TFDS data source (len, getitem -> feature dict)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  if os.path.isdir(name):
    return tfds.builder_from_directory(name).as_data_source(split=split)
  return tfds.data_source(name, split=split, data_dir=data_dir or None)


def lookup(features: Any, key: str) -> Any:
  """features['a']['b'] for key 'a/b'; None where a part is missing."""
  for part in key.split("/"):
    if not isinstance(features, dict) or part not in features:
      return None
    features = features[part]
  return features


class TfdsAdapter:
  """Feature dict -> record dict {"kind", "name", "caption", "pixels" | "frames"}."""

  def __init__(self, modality: str, cfg, dataset_name: str):
    """cfg: the task config's `tfds` section."""
    self.modality = modality
    self.pixel_key = cfg.image_key if modality == "image" else cfg.video_key
    self.caption_key, self.name_key = cfg.caption_key, cfg.name_key
    self.dataset_name = dataset_name

  def __call__(self, index: int, features: Any) -> dict[str, Any]:
    name = f"{self.dataset_name}#{index}"
    if self.name_key:
      value = lookup(features, self.name_key)
      if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
      name = f"{self.dataset_name}:{value}" if value is not None else name
    pixels = lookup(features, self.pixel_key)
    if pixels is None:
      return {"kind": "error", "name": name, "error": f"feature {self.pixel_key!r} missing"}
    caption = lookup(features, self.caption_key) if self.caption_key else None
    if isinstance(caption, np.ndarray):
      caption = list(caption)
    field = "pixels" if self.modality == "image" else "frames"
    return {"kind": self.modality, "name": name, "caption": caption, field: np.asarray(pixels)}
