"""Data pipeline benchmark: throughput per modality and worker count, and packing efficiency.

Part 1 runs the real pipeline on the bundled default dataset (decode, transform, tokenise, pack,
Grain worker processes) for each modality with 1 and 2 workers, and reports samples/s and real
tokens/s per process after a warm-up (worker start-up excluded).

Part 2 measures the packer's efficiency (real tokens / B * L) on a stream whose token counts
follow the paper's stage-2 recipe: images resized to a longer side in U[64, 1024] from sources of
typical sizes, videos of 720p / 480p sources with clips of up to 32 frames at stride 1-12 and a
longer side in U[64, 512] (the same samplers as the pipeline; pixels are not decoded). The packer
and `atoken_jax.packing.pack_greedy` are the real ones. Goal: >= 98% real tokens.

  python bench/bench_data.py                 # both parts, ~2-3 minutes on 2 cores
  python bench/bench_data.py --seconds 5 --skip-efficiency
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grain  # noqa: E402

from atoken_jax.config import PATCH_DIM  # noqa: E402
from atoken_jax.tokens import TokenSeq, grid_coords  # noqa: E402
from bench import machine  # noqa: E402
from data_pipelines import (  # noqa: E402
  build_task_iterator,
  default_task_config,
  transforms,  # noqa: E402
)
from data_pipelines.pack_stage import PackIterDataset, PackOptions  # noqa: E402
from data_pipelines.samples import Processed, Sample  # noqa: E402

# ------------------------------------------------------------------------ part 1: throughput

BENCH_TASKS = {  # name: (task, overrides)
    "image": ("image_recon", dict(batch_rows=4, row_len=4096, max_samples_per_row=64),
              dict(min_side=64, max_side=512)),
    "video": ("video_recon", dict(batch_rows=2, row_len=4096, max_samples_per_row=64),
              dict(min_side=64, max_side=256, max_frames=16)),
    "voxels": ("voxels_recon", dict(batch_rows=2, row_len=16384, max_samples_per_row=4), {}),
}


def throughput(modality: str, workers: int, seconds: float) -> dict:
  name, shape, section = BENCH_TASKS[modality]
  cfg = default_task_config(name, stage=2, preset="paper")
  cfg.update(shape)
  cfg[modality].update(section)
  if modality == "voxels":
    cfg.voxels.long = "subsample"
  cfg.shard_index, cfg.shard_count, cfg.num_workers = 0, 1, workers
  it = build_task_iterator(cfg)
  try:
    for _ in range(2):  # warm-up: worker start-up, first decodes
      next(it)
    s0, t0, start, batches = it.stats.samples, it.stats.real_tokens, time.perf_counter(), 0
    while time.perf_counter() - start < seconds or batches < 3:
      next(it)
      batches += 1
    dt = time.perf_counter() - start
    samples, tokens = it.stats.samples - s0, it.stats.real_tokens - t0
    return {"samples_s": samples / dt, "tokens_s": tokens / dt, "batches": batches,
            "efficiency": it.metrics()["data/packing_efficiency"]}
  finally:
    it.close()


# ------------------------------------------------------------------------ part 2: efficiency

_ZEROS = np.zeros(PATCH_DIM, np.float32)


def _fake_seq(nt: int, nh: int, nw: int, kind: str) -> TokenSeq:
  n = nt * nh * nw
  return TokenSeq(patches=np.broadcast_to(_ZEROS, (n, PATCH_DIM)),
                  coords=grid_coords((nt, nh, nw)), kind=kind, frames=4 * nt, grid=(nt, nh, nw))


class _PaperLengths:
  """index -> Processed with a stage-2 image or video token grid (no pixels)."""

  IMAGE_SOURCES = ((375, 500), (500, 333), (768, 1024), (1080, 1920), (2048, 1536), (640, 640))
  VIDEO_SOURCES = ((720, 1280, 300), (480, 854, 240), (720, 1280, 900), (1080, 1920, 150))

  def __init__(self, video_fraction: float, row_len: int):
    self.video_fraction, self.row_len = video_fraction, row_len
    image = default_task_config("image_recon", stage=2, preset="paper").image
    video = default_task_config("video_recon", stage=2, preset="paper").video
    self.image_cfg, self.video_cfg = image, video

  def __call__(self, index: int, rng: np.random.Generator) -> Processed:
    del index
    if rng.random() < self.video_fraction:
      h, w, total = self.VIDEO_SOURCES[int(rng.integers(len(self.VIDEO_SOURCES)))]
      frames = len(transforms.stride_frame_indices(rng, total, self.video_cfg.strides,
                                                   self.video_cfg.max_frames))
      cfg, nt, kind, modality = self.video_cfg, frames // 4, "video", 1
    else:
      h, w = self.IMAGE_SOURCES[int(rng.integers(len(self.IMAGE_SOURCES)))]
      cfg, nt, kind, modality = self.image_cfg, 1, "image", 0
    rh, rw = transforms.resize_target(rng, h, w, cfg.min_side, cfg.max_side, True,
                                      self.row_len)
    seq = _fake_seq(nt, rh // 16, rw // 16, kind)
    sample = Sample(seq, modality, 0, np.zeros(64, np.int32), False, (4 * nt, rh, rw), 0)
    return Processed([sample])


def efficiency(video_fraction: float, rows: int, row_len: int, slots: int, batches: int,
               lookahead: float) -> float:
  ds = grain.MapDataset.range(10 ** 9).random_map(
      lambda i, rng, f=_PaperLengths(video_fraction, row_len): f(i, rng), seed=0)
  opts = PackOptions(rows, row_len, slots, lookahead=lookahead, read_threads=0)
  it = iter(PackIterDataset(ds, opts))
  real = capacity = 0
  for _ in range(batches):
    batch, _ = next(it)  # (Batch, stats)
    real += int(np.count_nonzero(batch.segment_ids))
    capacity += batch.segment_ids.size
  return real / capacity


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per run")
  parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--modalities", nargs="+", default=list(BENCH_TASKS))
  parser.add_argument("--batches", type=int, default=40, help="batches per efficiency run")
  parser.add_argument("--skip-efficiency", action="store_true")
  parser.add_argument("--skip-throughput", action="store_true")
  args = parser.parse_args()
  print(machine.describe(f"Python {platform.python_version()}"))
  if not args.skip_throughput:
    print("\n| modality | workers | samples/s | real tokens/s | packing eff. | batch [B, L] |")
    print("|---|---|---|---|---|---|")
    for modality in args.modalities:
      for workers in args.workers:
        r = throughput(modality, workers, args.seconds)
        shape = BENCH_TASKS[modality][1]
        print(f"| {modality} | {workers} | {r['samples_s']:.1f} | {r['tokens_s']:.0f} | "
              f"{r['efficiency']:.1%} | [{shape['batch_rows']}, {shape['row_len']}] |",
              flush=True)
  if not args.skip_efficiency:
    print("\nPacking efficiency, stage-2 token counts (real tokens / B*L):")
    print("| stream | B | L | S | lookahead | efficiency |")
    print("|---|---|---|---|---|---|")
    for label, frac in (("images", 0.0), ("videos", 1.0), ("images+videos 1:3", 0.75)):
      for rows, row_len, slots, lookahead in ((2, 16384, 64, 1.5), (2, 16384, 64, 2.0)):
        e = efficiency(frac, rows, row_len, slots, args.batches, lookahead)
        print(f"| {label} | {rows} | {row_len} | {slots} | {lookahead} | {e:.2%} |", flush=True)


if __name__ == "__main__":
  main()
