"""Host-side batches of 3D assets for the Gaussian-decoder task: voxels + K views + cameras.

One asset per batch row. For B assets, views_per_asset K, image size S and row length L:

  images [B, K, S, S, 3] float32 in [0, 1]   view_mask [B, K] bool
  w2c [B, K, 4, 4], fx, fy, cx, cy [B, K] float32 (`views.camera_arrays`)
  features="ground_truth": voxel_feats [B, L, 768] in [-1, 1], voxel_coords [B, L, 3] int32,
                           voxel_valid [B, L] bool
  features="tokens":       tokens: the tokenizer's packed `atoken_jax.batch.Batch`, one sample
                           per row, tokens in voxel order (patches carry the same features)
  attention="packed":      + layout_<even|odd>_<index|window|inverse> [B, ...] (per asset)

Sources use the data pipeline's specs ("default", "arrayrecord:PATH", "folder:PATH"; the
"voxels" modality of each) and its record decoding, plus "procedural": five small procedural
assets (`procedural.py`, ~1k voxels, 6 views) for CPU smoke runs. Unusable assets (bad records,
more than L voxels) are skipped and counted in `skipped`. The order is a seeded permutation
per epoch, split over processes; `get_state` / `set_state` make it resumable (checkpointed with
the run).
"""
from __future__ import annotations

import logging
from typing import Sequence

import jax
import ml_collections
import numpy as np

from atoken_jax import config as config_lib
from atoken_jax import packing, tokens
from atoken_jax.batch import Batch
from atoken_jax.gs3d import objective, procedural
from atoken_jax.gs3d import views as views_lib
from atoken_jax.model import gaussian_decoder as net_lib

log = logging.getLogger(__name__)
FEATURES = ("ground_truth", "tokens")


def example(asset, *, views_per_asset: int, image_size: int, row_len: int, features: str,
            gs_cfg: config_lib.GaussianDecoderConfig | None = None, packed: bool = False,
            rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
  """One asset -> one batch row (see the module docstring; no leading B axis, except the
  one-row `Batch` under "tokens").

  Views: K distinct random ones with `rng`, else the first K. Raises ValueError when the asset
  has more than `row_len` voxels or no stored cameras.
  """
  from data_pipelines import voxelize  # pylint: disable=import-outside-toplevel
  if features not in FEATURES:
    raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
  if len(asset.coords) > row_len:
    raise ValueError(f"{len(asset.coords)} voxels > row length {row_len}")
  if len(asset.w2c) != len(asset.views):
    raise ValueError("the asset has no stored cameras for its views")
  idx, mask = views_lib.choose_views(len(asset.views), views_per_asset, rng)
  out = {"images": views_lib.target_images(asset.views[idx], image_size), "view_mask": mask,
         **views_lib.camera_arrays(np.asarray(asset.w2c)[idx], np.asarray(asset.fov_x)[idx],
                                   image_size)}
  feats01 = voxelize.voxel_feats(asset.src, asset.views)
  coords = np.asarray(asset.coords, np.int32)
  if features == "ground_truth":
    f, c, valid = views_lib.pad_voxels(feats01 * np.float32(2) - np.float32(1), coords, row_len)
    out.update(voxel_feats=f, voxel_coords=c, voxel_valid=valid)
  else:
    seq = tokens.voxels_to_tokens(tokens.Voxels(coords=coords, feats=feats01))
    out["tokens"] = pb = packing.pack([seq], row_len, 1, num_rows=1)
    c, valid = pb.coords[0, :, 1:4], pb.sample_ids[0] > 0
  if packed:
    layout = net_lib.window_layout(c[None], valid[None], gs_cfg)
    out.update(objective.flatten_layout(layout))
  return out


def collate(examples: Sequence[dict]) -> dict:
  """Stacks rows on a new leading [B] axis; one-row token `Batch`es are concatenated (their
  block tables are per row, so they concatenate too)."""
  out = {}
  for k, first in examples[0].items():
    if isinstance(first, Batch):
      out[k] = jax.tree.map(lambda *rows: np.concatenate(rows), *[e[k] for e in examples])
    else:
      out[k] = np.stack([e[k] for e in examples])
  return out


def data_config(preset: str) -> ml_collections.ConfigDict:
  """Defaults of `cfg.data` (see `AssetBatches`)."""
  tiny = preset == "tiny"
  return ml_collections.ConfigDict(dict(
      sources=("default",),     # data pipeline source specs holding "voxels" records
      batch_size=1 if tiny else 8,  # assets per step (all processes together)
      views_per_asset=2 if tiny else 4,  # K rendered views per asset
      image_size=64 if tiny else 256,   # stored renders are 256²: 512 needs 512² renders
      row_len=20480 if tiny else 32768,  # static voxel row; larger assets are skipped
      num_views=16,             # views rendered for mesh / NeRF records
      random_views=True, seed=0))


class AssetBatches:
  """Iterator of collated host batches (this process's share: batch_size / process_count rows).

  Args:
    cfg: `data_config` fields; features / packed / gs_cfg: see `example`;
    process_index, process_count: how the permutation is split.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, *, features: str, packed: bool = False,
               gs_cfg: config_lib.GaussianDecoderConfig | None = None, process_index: int = 0,
               process_count: int = 1):
    from data_pipelines import sources  # pylint: disable=import-outside-toplevel
    if cfg.batch_size % process_count:
      raise ValueError(f"batch_size {cfg.batch_size} is not a multiple of the {process_count} "
                       "processes")
    self.cfg, self.features, self.packed, self.gs_cfg = cfg, features, packed, gs_cfg
    self.rows = cfg.batch_size // process_count
    self.process_index, self.process_count = process_index, process_count
    specs = [s for s in cfg.sources if s != "procedural"]
    self.parts = []
    if specs:
      spec = ml_collections.ConfigDict(dict(sources=tuple(specs), modalities=("voxels",),
                                            name="gs3d", tfds=ml_collections.ConfigDict()))
      self.parts = sources.resolve_parts(spec)
    self.items = [(p, i) for p, part in enumerate(self.parts) for i in range(len(part))]
    if "procedural" in cfg.sources:  # small CPU assets (procedural.py), one per shape
      self.items += [(-1, i) for i in range(len(procedural.SHAPES))]
    self.epoch, self.position, self.skipped = 0, 0, {}
    self._order = None

  def __iter__(self):
    return self

  def _epoch_order(self) -> np.ndarray:
    if self._order is None:
      perm = np.random.default_rng([self.cfg.seed, self.epoch]).permutation(len(self.items))
      self._order = perm[self.process_index::self.process_count]
      if not len(self._order):
        raise ValueError(f"process {self.process_index} got no assets: fewer assets "
                         f"({len(self.items)}) than processes")
    return self._order

  def _next_asset(self):
    from data_pipelines import decode  # pylint: disable=import-outside-toplevel
    for _ in range(len(self.items) + 1):  # one full pass without a usable asset is an error
      order = self._epoch_order()
      if self.position >= len(order):
        self.epoch, self.position, self._order = self.epoch + 1, 0, None
        continue
      p, i = self.items[order[self.position]]
      self.position += 1
      rng = np.random.default_rng([self.cfg.seed, self.epoch, int(order[self.position - 1])])
      try:
        if p < 0:
          asset = procedural.procedural_asset(procedural.SHAPES[i], num_views=6,
                                              size=max(16, int(self.cfg.image_size)) // 16 * 16)
        else:
          raw = self.parts[p].dataset[i][2]
          if isinstance(raw, dict) and raw.get("kind") == "error":
            raise decode.BadData("decode_error", raw.get("error", ""))
          asset = views_lib.asset_from_record(raw, int(self.cfg.num_views),
                                              int(rng.integers(1 << 31)))
        return example(asset, views_per_asset=int(self.cfg.views_per_asset),
                       image_size=int(self.cfg.image_size), row_len=int(self.cfg.row_len),
                       features=self.features, gs_cfg=self.gs_cfg, packed=self.packed,
                       rng=rng if self.cfg.random_views else None)
      except (decode.BadData, ValueError) as e:
        reason = getattr(e, "reason", "unusable")
        if reason not in self.skipped:
          log.warning("skipping a 3D asset (%s): %s", reason, str(e)[:200])
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
    raise ValueError(f"no usable 3D asset in {tuple(self.cfg.sources)} (skipped: "
                     f"{self.skipped})")

  def __next__(self) -> dict[str, np.ndarray]:
    return collate([self._next_asset() for _ in range(self.rows)])

  def get_state(self) -> dict:
    return {"epoch": self.epoch, "position": self.position, "skipped": dict(self.skipped)}

  def set_state(self, state: dict) -> None:
    self.epoch, self.position = int(state["epoch"]), int(state["position"])
    self.skipped = dict(state.get("skipped", {}))
    self._order = None
