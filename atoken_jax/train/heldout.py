"""End-of-run report on the bundled data's held-out split, next to a PCA baseline.

For every modality the run trained to reconstruct (image_recon -> held-out photos, video_recon
-> held-out clips, voxels_recon -> held-out voxel features), the tokenizer's reconstruction from
the posterior mean (FSQ codes for a quantised model) is scored with PSNR (and SSIM for pixels)
against PCA with as many components as the latent has channels, fit on the same-size patches of
the TRAINING split: a linear bottleneck of equal latent size.

Written to WORKDIR/heldout_report.json (atomically), to TensorBoard (heldout/<modality>/...) and
as an original | reconstruction grid, WORKDIR/heldout_grid.png (held-out photos).

    cfg.heldout_report = ConfigDict(enabled=True, image_side=128, clip_side=96,
                                    clip_frames=8, use_ema=False)
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from PIL import Image

from atoken_jax import metrics
from atoken_jax import tokens as tokens_lib
from atoken_jax.atomic_write import write_atomic

REPORT_FILE = "heldout_report.json"
GRID_FILE = "heldout_grid.png"


def default_config(enabled: bool = False) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      enabled=enabled,
      image_side=128,   # photos resized so the longer side is this (sides multiples of 16)
      clip_side=96,     # clips likewise
      clip_frames=8,    # the first N frames of each held-out clip (a multiple of 4)
      use_ema=False))   # False: the parameters the run trained; True: their EMA


# ---------------------------------------------------------------------------- data
def _root() -> str:
  from data_pipelines import default_data  # pylint: disable=import-outside-toplevel
  return default_data.ensure_default_dataset()


def _records(root: str, part: str, modality: str) -> list[dict]:
  """Decoded records of `part` ("train" or "heldout") of the bundled dataset at `root`."""
  from data_pipelines import arrayrecord_io, default_data, records  # pylint: disable=import-outside-toplevel
  if part == default_data.HELDOUT:
    root = os.path.join(root, default_data.HELDOUT)
  src = arrayrecord_io.RecordSource(arrayrecord_io.find_shards(os.path.join(root, modality)))
  return [records.decode_record(src[i]) for i in range(len(src))]


def _resize16(img: Image.Image, side: int) -> np.ndarray:
  """PIL image -> float32 [h, w, 3] in [-1, 1], longer side `side`, sides multiples of 16."""
  scale = side / max(img.width, img.height)
  w = max(16, round(img.width * scale / 16) * 16)
  h = max(16, round(img.height * scale / 16) * 16)
  x = np.asarray(img.convert("RGB").resize((w, h), Image.BICUBIC, reducing_gap=3.0), np.float32)
  return x / 127.5 - 1.0


def photos(part: str, side: int) -> tuple[np.ndarray, ...]:
  """The bundled photos of `part` as float32 [h, w, 3] in [-1, 1]."""
  return _photos(_root(), part, side)


def clips(part: str, side: int, frames: int) -> tuple[np.ndarray, ...]:
  """The first `frames` frames of the bundled clips of `part`: float32 [T, h, w, 3]."""
  return _clips(_root(), part, side, frames)


def voxel_sets(part: str, num_views: int = 16) -> tuple[tokens_lib.Voxels, ...]:
  """The bundled 3D assets of `part` as `Voxels` (features in [0, 1])."""
  return _voxel_sets(_root(), part, num_views)


@functools.lru_cache(maxsize=None)
def _photos(root: str, part: str, side: int) -> tuple[np.ndarray, ...]:
  from data_pipelines import decode  # pylint: disable=import-outside-toplevel
  return tuple(_resize16(decode.decode_image(r), side) for r in _records(root, part, "image"))


@functools.lru_cache(maxsize=None)
def _clips(root: str, part: str, side: int, frames: int) -> tuple[np.ndarray, ...]:
  from data_pipelines import decode  # pylint: disable=import-outside-toplevel
  out = []
  for r in _records(root, part, "video"):
    got, _ = decode.video_frames(r, lambda total, fps: list(range(min(frames, total))))
    out.append(np.stack([_resize16(Image.fromarray(f), side) for f in got]))
  return tuple(out)


@functools.lru_cache(maxsize=None)
def _voxel_sets(root: str, part: str, num_views: int) -> tuple[tokens_lib.Voxels, ...]:
  from data_pipelines import decode, voxelize  # pylint: disable=import-outside-toplevel
  out = []
  for r in _records(root, part, "voxels"):
    asset = decode.voxel_asset(r, num_views, seed=0)
    out.append(tokens_lib.Voxels(coords=np.asarray(asset.coords).astype(np.int32),
                                 feats=voxelize.voxel_feats(asset.src, asset.views)))
  return tuple(out)


# ---------------------------------------------------------------------------- PCA
class PCA:
  """Mean + the top-k principal directions of row vectors [N, D] (a linear k-dim bottleneck)."""

  def __init__(self, rows: np.ndarray, k: int):
    rows = np.asarray(rows, np.float64)
    self.mean = rows.mean(0)
    _, _, vt = np.linalg.svd(rows - self.mean, full_matrices=False)
    self.components = vt[:k]  # [k, D]

  def reconstruct(self, rows: np.ndarray) -> np.ndarray:
    z = (np.asarray(rows, np.float64) - self.mean) @ self.components.T
    return (z @ self.components + self.mean).astype(np.float32)


def _patch_rows(x: Any) -> tuple[np.ndarray, tokens_lib.TokenSeq]:
  """An image / clip / Voxels -> (its tokens' real values [n, D], the TokenSeq)."""
  seq = tokens_lib.to_tokens(x)
  return np.asarray(seq.patches[:, :tokens_lib.real_width(seq.kind)]), seq


def _from_rows(rows: np.ndarray, seq: tokens_lib.TokenSeq):
  full = tokens_lib.full_width(np.asarray(rows, np.float32))
  if seq.kind == "voxels":
    return tokens_lib.tokens_to_voxels(full, seq)
  return tokens_lib.tokens_to_pixels(full, seq)


def pca_reconstructions(train: Any, heldout: Any, k: int) -> list:
  """PCA-k fit on the patches of `train`, applied to each of `heldout` (same kind)."""
  pca = PCA(np.concatenate([_patch_rows(x)[0] for x in train]), k)
  out = []
  for x in heldout:
    rows, seq = _patch_rows(x)
    out.append(_from_rows(np.clip(pca.reconstruct(rows), -1.0, 1.0), seq))
  return out


# ---------------------------------------------------------------------------- scoring
def _scores(originals, reconstructions, kind: str) -> dict[str, float]:
  psnrs, ssims = [], []
  for x, y in zip(originals, reconstructions):
    if kind == "voxels":
      mse = float(np.mean((np.asarray(x.feats) - np.clip(np.asarray(y.feats), 0, 1)) ** 2))
      psnrs.append(10 * np.log10(1.0 / max(mse, 1e-12)))
      continue
    y = np.clip(y, -1.0, 1.0)
    psnrs.append(float(np.mean(metrics.psnr(x, y))))  # a clip: the mean over its frames
    ssims.append(float(np.mean(metrics.ssim(x, y))))
  out = {"psnr": float(np.mean(psnrs)), "psnr_each": [float(p) for p in psnrs]}
  if ssims:
    out["ssim"] = float(np.mean(ssims))
  return out


def recon_modalities(cfg: ml_collections.ConfigDict) -> list[str]:
  """The modalities `cfg`'s tasks train to reconstruct from the bundled data's training split
  (source "default"), in image, video, voxels order."""
  from data_pipelines import config as data_config  # pylint: disable=import-outside-toplevel
  names = {n for n, t in cfg.tasks.items() if t.accum_steps > 0 and n.endswith("_recon")
           and data_config.has_data(cfg, n)
           and "default" in tuple(data_config.resolve_task(cfg, n).sources)}
  return [m for m in ("image", "video", "voxels") if f"{m}_recon" in names]


def evaluate(tokenizer, cfg: ml_collections.ConfigDict) -> tuple[dict, list]:
  """-> (report {modality: {model: scores, pca: scores, samples}}, photo grid pairs uint8)."""
  from data_pipelines import default_data  # pylint: disable=import-outside-toplevel
  rep = cfg.get("heldout_report", default_config())
  held, k = default_data.HELDOUT, tokenizer.cfg.latent_dim
  report: dict[str, Any] = {"latent_dim": k, "quantizer": tokenizer.cfg.quantizer or "none"}
  pairs = []
  for modality in recon_modalities(cfg):
    if modality == "image":
      train, test = photos("train", rep.image_side), photos(held, rep.image_side)
    elif modality == "video":
      train = clips("train", rep.clip_side, rep.clip_frames)
      test = clips(held, rep.clip_side, rep.clip_frames)
    else:
      train, test = voxel_sets("train"), voxel_sets(held)
    rec = tokenizer.decode(tokenizer.encode(list(test), posterior="mean"))
    model_out = [rec.pixels(i) for i in range(len(test))]
    report[modality] = {"samples": len(test),
                        "model": _scores(test, model_out, modality),
                        "pca": _scores(test, pca_reconstructions(train, test, k), modality)}
    if modality == "image":
      to8 = lambda x: np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)
      pairs = [(to8(x), to8(y)) for x, y in zip(test, model_out)]
  return report, pairs


def scalars(report: dict) -> dict[str, float]:
  """The report as flat TensorBoard scalars: heldout/<modality>/<psnr|ssim>[_pca]."""
  out = {}
  for modality, r in report.items():
    if not isinstance(r, dict):
      continue
    for who, suffix in (("model", ""), ("pca", "_pca")):
      for metric in ("psnr", "ssim"):
        if metric in r[who]:
          out[f"heldout/{modality}/{metric}{suffix}"] = r[who][metric]
  return out


def report_run(loop, step: int, state) -> dict | None:
  """The tokenizer task's end-of-run hook (`train.task.Hook`): evaluates, logs, writes the JSON
  and the grid PNG (process 0)."""
  from atoken_jax import sharding as sharding_lib  # pylint: disable=import-outside-toplevel
  from atoken_jax import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
  from atoken_jax.eval import visuals  # pylint: disable=import-outside-toplevel
  cfg = loop.cfg
  rep = cfg.get("heldout_report", None)
  if rep is None or not rep.enabled or not recon_modalities(cfg):
    return None
  params = state.ema_params if rep.use_ema else state.params
  tok = tokenizer_lib.Tokenizer(loop.task.model_cfg, sharding_lib.to_host(params["model"]))
  report, pairs = evaluate(tok, cfg)
  report = {"step": step, "params": "ema" if rep.use_ema else "trained", **report}
  loop.writer.scalars(step, scalars(report))
  if jax.process_index() == 0:
    write_atomic(os.path.join(loop.workdir, REPORT_FILE),
                 lambda tmp: _dump_json(report, tmp))
    if pairs:
      visuals.write_grid(pairs, os.path.join(loop.workdir, GRID_FILE))
      loop.writer.image(step, "heldout/image_grid", visuals.image_grid(pairs) / 255.0)
    for line in summary_lines(report):
      print(line, flush=True)
  return report


def _dump_json(value: dict, path: str) -> None:
  with open(path, "w") as f:
    json.dump(value, f, indent=2)


def summary_lines(report: dict) -> list[str]:
  """One line per modality: the model's held-out PSNR (SSIM) next to PCA's."""
  out = []
  for modality in ("image", "video", "voxels"):
    if modality in report:
      r, m, p = report[modality], report[modality]["model"], report[modality]["pca"]
      ssim = f", SSIM {m['ssim']:.3f} (PCA {p['ssim']:.3f})" if "ssim" in m else ""
      out.append(f"held-out {modality} ({r['samples']}): PSNR {m['psnr']:.2f} dB "
                 f"(PCA-{report['latent_dim']} {p['psnr']:.2f} dB){ssim}")
  return out
