"""Reconstruction protocols (paper §7): images (Table 4) and videos (Table 6).

Images: resize (shorter side) + centre crop to 256 → encode → decode; PSNR, SSIM (skimage
Gaussian window), LPIPS per image, averaged; rFID = Fréchet distance between the InceptionV3 pool
features of the reconstructions and of the originals of the same images.

Videos: native resolution centre-cropped to multiples of 16 (1080 → 1072), the first
`num_frames` frames; the tokenizer's temporal tiles (`ModelConfig.tile_latent_frames`) handle long
clips. PSNR / SSIM / LPIPS per frame, averaged per video, then over videos; rFVD = Fréchet distance
of I3D features of non-overlapping `fvd_clip`-frame windows (16, as FVD), originals vs
reconstructions.

Native-resolution frames over the task's `max_pixels` (default 1024 x 1024) are resized to fit
(counted in `notes`), or skipped with on_oversize="refuse" (`atoken_jax.pixel_budget`).

Reconstructions are clipped to [-1, 1] and, with `quantize` (the default), rounded to the uint8
grid: the numbers are those of the saved PNG / video frames, as the published scripts measure.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from atoken_jax.eval import data as data_lib
from atoken_jax.metrics import FrechetStats
from atoken_jax.pixel_budget import PixelBudget


def reconstruct(tokenizer, inputs: list[np.ndarray], posterior: str = "mean", seed: int = 0,
                quantize: bool = True) -> list[np.ndarray]:
  """Images [H, W, 3] / videos [T, H, W, 3] in [-1, 1] → reconstructions of the same shapes
  (videos: the frames the tokenizer keeps, `T` rounded down to a multiple of 4 when T ≥ 4)."""
  enc = tokenizer.encode(inputs, posterior=posterior, seed=seed)
  rec = tokenizer.decode(enc)
  out = []
  for i in range(len(inputs)):
    r = np.clip(np.asarray(rec.pixels(i), np.float32), -1, 1)
    out.append(data_lib.to_unit_range(data_lib.to_uint8(r)) if quantize else r)
  return out


def _mean(values) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


class _Frechet:
  """Real / reconstruction feature statistics of one task."""

  def __init__(self, net):
    self.net, self.real, self.fake = net, FrechetStats(), FrechetStats()

  def update(self, real: np.ndarray, fake: np.ndarray) -> None:
    if self.net is not None and len(real):
      self.real.update(self.net(real))
      self.fake.update(self.net(fake))

  def distance(self, notes: list[str], what: str) -> float | None:
    if self.net is None:
      return None
    if self.real.count < 2:
      notes.append(f"{what}: needs at least 2 samples, got {self.real.count}")
      return None
    if self.real.count < self.net.dim:
      notes.append(f"{what} from {self.real.count} samples < feature dim {self.net.dim}: "
                   "the covariance is rank-deficient and the value is biased upwards")
    return self.fake.distance(self.real)


def image_reconstruction(tokenizer, task, res, *, batch_size: int = 8, posterior: str = "mean",
                         seed: int = 0, quantize: bool = True, keep: int = 8,
                         progress: Callable = lambda it, **_: it) -> dict[str, Any]:
  """Runs the image protocol on `task.data`. Returns the task result (see `runner`), with
  `examples`: up to `keep` (original, reconstruction) uint8 pairs for the grid."""
  size = int(task.get("size", 256))
  mode = task.get("protocol", "resize_center_crop")
  resample = task.get("resample", "bicubic")
  source = data_lib.open_source(task.data, "image")
  skipped, notes, rows, examples = [], [], [], []
  fid = _Frechet(res.inception)
  budget = PixelBudget.from_config(task)
  items = data_lib.iter_items(source, lambda r: data_lib.read_image(r, mode, size, resample,
                                                                    budget), skipped)

  def flush(batch):
    if not batch:
      return
    if len({b.pixels.shape for b in batch}) > 1:  # "native" protocol: one image at a time
      for b in batch:
        flush([b])
      return
    real = np.stack([data_lib.to_unit_range(b.pixels) for b in batch])
    fake = np.stack(reconstruct(tokenizer, list(real), posterior, seed, quantize))
    psnr, ssim = (np.asarray(v) for v in res.image_metrics(real, fake))
    lp = res.lpips(real, fake) if res.lpips is not None else [None] * len(batch)
    fid.update(real, fake)
    for b, p, s, l, f in zip(batch, psnr, ssim, lp, fake):
      rows.append({"name": b.name, "psnr": float(p), "ssim": float(s),
                   "lpips": None if l is None else float(l)})
      if len(examples) < keep:
        examples.append((b.pixels, data_lib.to_uint8(f)))

  batch = []
  for item in progress(items, total=len(source)):
    batch.append(item)
    if len(batch) == batch_size:
      flush(batch)
      batch = []
  flush(batch)
  notes.extend(budget.notes())
  metrics = {"psnr": _mean(r["psnr"] for r in rows), "ssim": _mean(r["ssim"] for r in rows),
             "lpips": _mean(r["lpips"] for r in rows), "rfid": fid.distance(notes, "rFID")}
  return {"kind": "image_recon", "count": len(rows), "metrics": metrics, "per_item": rows,
          "skipped": skipped, "notes": notes, "examples": examples}


def _clips(video: np.ndarray, length: int) -> np.ndarray:
  """[T, H, W, 3] → [T // length, length, H, W, 3] non-overlapping windows."""
  n = len(video) // length
  return video[:n * length].reshape((n, length) + video.shape[1:])


def video_reconstruction(tokenizer, task, res, *, posterior: str = "mean", seed: int = 0,
                         quantize: bool = True, keep: int = 2, frame_batch: int = 8,
                         progress: Callable = lambda it, **_: it) -> dict[str, Any]:
  """Runs the video protocol on `task.data`, one video at a time. `examples`: up to `keep`
  (original, reconstruction) uint8 videos for side-by-side files."""
  num_frames = int(task.get("num_frames", 16))
  clip = int(task.get("fvd_clip", 16))
  max_side = int(task.get("max_side", 0))
  source = data_lib.open_source(task.data, "video")
  skipped, notes, rows, examples = [], [], [], []
  fvd = _Frechet(res.i3d)
  short = 0
  budget = PixelBudget.from_config(task)
  items = data_lib.iter_items(source, lambda r: data_lib.read_video(
      r, num_frames, "first", max_side, budget), skipped)
  for item in progress(items, total=len(source)):
    real = data_lib.to_unit_range(item.pixels)
    fake = reconstruct(tokenizer, [real], posterior, seed, quantize)[0]
    real = real[:len(fake)]
    psnr, ssim, lp = [], [], []
    for s in range(0, len(real), frame_batch):
      p, q = (np.asarray(v) for v in res.image_metrics(real[s:s + frame_batch],
                                                        fake[s:s + frame_batch]))
      psnr.extend(p.tolist())
      ssim.extend(q.tolist())
      if res.lpips is not None:
        lp.extend(res.lpips(real[s:s + frame_batch], fake[s:s + frame_batch]).tolist())
    real_clips, fake_clips = _clips(real, clip), _clips(fake, clip)
    short += not len(real_clips)
    fvd.update(real_clips, fake_clips)
    rows.append({"name": item.name, "frames": len(real), "size": list(real.shape[1:3]),
                 "psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)),
                 "lpips": float(np.mean(lp)) if lp else None})
    if len(examples) < keep:
      examples.append((item.pixels[:len(fake)], data_lib.to_uint8(fake)))
  notes.extend(budget.notes())
  if short and res.i3d is not None:
    notes.append(f"{short} videos shorter than one {clip}-frame FVD clip: not in rFVD")
  metrics = {"psnr": _mean(r["psnr"] for r in rows), "ssim": _mean(r["ssim"] for r in rows),
             "lpips": _mean(r["lpips"] for r in rows), "rfvd": fvd.distance(notes, "rFVD")}
  return {"kind": "video_recon", "count": len(rows), "metrics": metrics, "per_item": rows,
          "skipped": skipped, "notes": notes, "examples": examples}
