"""Attention benchmark: work done beyond the mask, and the wall time of one So400m-width layer.

Part 1 packs token streams of the paper's curriculum stages 1-3 with the real packer
(`data_pipelines.pack_stage`, paper batch shapes) and counts, per batch, the query-key pairs the
attention masks allow (sum over attention groups of n^2) and the pairs each implementation
computes: dense / chunked attention every pair of the row (B * L^2), block-sparse the visited
block pairs of the host block table (`atoken_jax.attention_blocks.pairs_computed`, rows in
lockstep, padding pairs of partly filled chunks included). "table shapes" counts the distinct
block-table shapes (compiles) over all of a stage's tasks' batches. Token counts follow the paper's
per-stage transforms (bench/bench_data.py's generator of source sizes; no pixels are decoded);
a stage mixes its tasks by the paper's task ratios (pairs weighted by ratio). 3D assets are
modelled as U[4096, 24576] occupied voxels each (an assumption: no asset set is bundled).

Part 2 times one So400m-width self-attention layer (width 1152, 16 heads: qkv projection,
attention, output projection), forward + backward, float32, on one packed 16,384-token row of
the stage-2 stream, compile excluded: the old chunked path (keys in chunks of 1024, what the
So400m configs ran) against the block-sparse one. Dense attention at L = 16,384 would hold
16 x 16,384^2 float32 scores (17 GiB) plus their gradient: it does not fit this machine.

  python bench/bench_attention.py                  # both parts, ~5 minutes on 2 cores
  python bench/bench_attention.py --skip-timing --batches 20
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grain  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from atoken_jax import attention_blocks  # noqa: E402
from atoken_jax.model import attention as attention_lib  # noqa: E402
from atoken_jax.model import atoken as atoken_model  # noqa: E402
from bench import machine  # noqa: E402
from bench.bench_data import _PaperLengths, _fake_seq  # noqa: E402
from data_pipelines import default_task_config, transforms  # noqa: E402
from data_pipelines.config import STAGE_RATIOS  # noqa: E402
from data_pipelines.pack_stage import PackIterDataset, PackOptions  # noqa: E402
from data_pipelines.samples import Processed, Sample  # noqa: E402

VIDEO_FPS = 30.0  # of the video sources
VOXELS = (4096, 24576)  # occupied voxels per 3D asset (assumption, see the docstring)


class _StageLengths:
  """index -> Processed with the token grid of one task at one stage (no pixels)."""

  def __init__(self, task: str, stage: int):
    self.cfg = default_task_config(task, stage=stage, preset="paper")
    self.modality = task.split("_")[0]

  def __call__(self, index: int, rng: np.random.Generator) -> Processed:
    del index
    cfg, row_len = self.cfg, self.cfg.row_len
    if self.modality == "voxels":
      n = int(rng.integers(*VOXELS))
      seq = _fake_seq(1, 1, n, "voxels")
      return Processed([Sample(seq, 2, 0, np.zeros(64, np.int32), False, (1, 1, n), 0)])
    if self.modality == "image":
      h, w = _PaperLengths.IMAGE_SOURCES[int(rng.integers(len(_PaperLengths.IMAGE_SOURCES)))]
      nt, kind, modality, side = 1, "image", 0, cfg.image
    else:
      h, w, total = _PaperLengths.VIDEO_SOURCES[
          int(rng.integers(len(_PaperLengths.VIDEO_SOURCES)))]
      side = cfg.video
      if side.fps > 0:
        frames = len(transforms.fps_frame_indices(total, VIDEO_FPS, side.fps, side.max_frames))
      else:
        frames = len(transforms.stride_frame_indices(rng, total, side.strides, side.max_frames))
      nt, kind, modality = frames // 4, "video", 1
    rh, rw = transforms.resize_target(rng, h, w, side.min_side, side.max_side, True, row_len)
    per_frame = (rh // 16) * (rw // 16)
    piece = min(nt, max(1, row_len // per_frame))  # long clips split into row-sized pieces
    if 4 <= piece < nt:
      piece -= piece % 4  # whole temporal tiles
    samples = []
    for start in range(0, nt, piece):
      n = min(piece, nt - start)
      samples.append(Sample(_fake_seq(n, rh // 16, rw // 16, kind), modality, 0,
                            np.zeros(64, np.int32), False, (4 * n, rh, rw), 0))
    return Processed(samples)


def _stream(task: str, stage: int, block: int):
  cfg = default_task_config(task, stage=stage, preset="paper")
  ds = grain.MapDataset.range(10 ** 9).random_map(
      lambda i, rng, f=_StageLengths(task, stage): f(i, rng), seed=stage)
  opts = PackOptions(cfg.batch_rows, cfg.row_len, cfg.max_samples_per_row,
                     attention_block=block, read_threads=0)
  return iter(PackIterDataset(ds, opts))


def pair_ratios(stage: int, batches: int, blocks=(128, 256, 512)) -> dict:
  """{"dense": ratio, block: ratio, ...}: computed / needed pairs, tasks weighted by ratio."""
  needed, computed = 0.0, {"dense": 0.0, **{b: 0.0 for b in blocks}}
  shapes = {b: set() for b in blocks}
  for task, weight in STAGE_RATIOS[stage].items():
    for block in blocks:
      it = _stream(task, stage, block)
      n = c = d = 0
      for _ in range(batches):
        batch = next(it)
        seg = batch["segment_ids"]
        n += attention_blocks.pairs_needed(seg)
        c += attention_blocks.pairs_computed(batch, seg.shape[1])
        shapes[block].add((task, batch["attn_pairs"].shape))
        d += seg.shape[0] * seg.shape[1] ** 2
      computed[block] += weight * c / n
      if block == blocks[0]:
        computed["dense"] += weight * d / n
    needed += weight
  out = {k: v / needed for k, v in computed.items()}
  out.update({f"shapes_{b}": len(v) for b, v in shapes.items()})
  return out


# ------------------------------------------------------------------------ part 2: timing


def stage2_row(row_len: int, block: int) -> dict:
  """One packed row of the stage-2 image+video stream (1:3), as model inputs."""
  ds = grain.MapDataset.range(10 ** 9).random_map(
      lambda i, rng, f=_PaperLengths(0.75, row_len): f(i, rng), seed=0)
  it = iter(PackIterDataset(ds, PackOptions(1, row_len, 64, attention_block=block,
                                            read_threads=0)))
  next(it)  # the first batch is packed from fewer candidates
  batch, _ = next(it)  # (Batch, stats)
  return batch.mask_info()


def time_layer(info: dict, impl: str, repeats: int, width=1152, heads=16) -> float:
  layer = attention_lib.SelfAttention(num_heads=heads, impl=impl)
  length = info["segment_ids"].shape[1]
  x = jax.random.normal(jax.random.key(0), (1, length, width), jnp.float32)
  info = jax.tree.map(jnp.asarray, info)
  if impl == "chunked":  # the path So400m configs ran before: no table, keys in chunks
    layer = attention_lib.SelfAttention(num_heads=heads, impl="block_sparse")
    info = {k: v for k, v in info.items() if k not in attention_blocks.TABLE_KEYS}
  params = layer.init(jax.random.key(1), x[:, :16], None,
                      jax.tree.map(lambda a: a[:, :16], {k: info[k] for k in ("segment_ids",)}),
                      atoken_model.segment_mask)

  def loss(p, x):
    y = layer.apply(p, x, None, info, atoken_model.segment_mask)
    return jnp.sum(y * y)

  step = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(step(params, x))
    times.append(time.perf_counter() - t0)
  return min(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3])
  parser.add_argument("--batches", type=int, default=12, help="batches per task and block")
  parser.add_argument("--row-len", type=int, default=16384)
  parser.add_argument("--repeats", type=int, default=2, help="timed runs (best is reported)")
  parser.add_argument("--skip-ratios", action="store_true")
  parser.add_argument("--skip-timing", action="store_true")
  args = parser.parse_args()
  print(machine.describe(f"jax {jax.__version__} ({jax.default_backend()})"))
  if not args.skip_ratios:
    print("\nAttention pairs computed / pairs needed (paper batch shapes, tasks by ratio):")
    print("| stage | dense or chunked | block-sparse, 128 | 256 | 512 | table shapes (128) |")
    print("|---|---|---|---|---|---|")
    for stage in args.stages:
      r = pair_ratios(stage, args.batches)
      cells = " | ".join(f"{r[k]:.2f}" for k in ("dense", 128, 256, 512))
      print(f"| {stage} | {cells} | {r['shapes_128']} |", flush=True)
  if not args.skip_timing:
    info = stage2_row(args.row_len, attention_blocks.DEFAULT_BLOCK_LEN)
    seg = info["segment_ids"]
    needed = attention_blocks.pairs_needed(seg)
    ratio = attention_blocks.pairs_computed(info, seg.shape[1]) / needed
    print(f"\nOne attention layer (width 1152, 16 heads), forward + backward, float32, one row of "
          f"{seg.shape[1]} tokens ({np.count_nonzero(seg)} real, {len(np.unique(seg)) - 1} "
          f"groups; needed pairs {needed / seg.shape[1] ** 2:.1%} of L^2, block-sparse computes "
          f"{ratio:.2f}x that), best of {args.repeats}:")
    print("| path | seconds |")
    print("|---|---|")
    results = {}
    for impl in ("block_sparse", "chunked"):
      results[impl] = time_layer(info, impl, args.repeats)
      print(f"| {impl} | {results[impl]:.2f} |", flush=True)
    speedup = results["chunked"] / results["block_sparse"]
    print(f"speed-up block-sparse over chunked: {speedup:.2f}x")


if __name__ == "__main__":
  main()
