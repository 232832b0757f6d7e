"""Times the real train step (one image-reconstruction micro-batch + update) and prints tokens/s,
MFU and peak device memory. Ready for a lent GPU/TPU; runs on CPU with `--preset tiny`.

  python bench/bench_train_step.py --preset so400m --rows 8 --row-len 4096 --steps 10
  python bench/bench_train_step.py --preset so400m --rows 1 --row-len 16384 --stream paper \\
      --attention block_sparse

Objective: L1 + KL (the frozen perceptual / semantic networks are off, so MFU counts only the
tokenizer's own FLOPs). Batches (synthetic pixels): `--stream grid` = full rows of side^2 images;
`--stream paper` = the stage-1 paper stream's image sizes (64-512 px from typical photo sizes,
`bench_data._PaperLengths`) through the real packer. `measure` is also what
bench/bench_vs_ml_atoken.py and bench/device_check.sh call.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from atoken_jax import batch as batch_lib  # noqa: E402
from atoken_jax import packing, tokens  # noqa: E402
from atoken_jax.batch import Batch  # noqa: E402
from atoken_jax.train import metrics as metrics_lib  # noqa: E402
from atoken_jax.train import loop as loop_lib  # noqa: E402
from atoken_jax.train import tokenizer_task  # noqa: E402
from experiments import stage1_image  # noqa: E402


def grid_batch(rows: int, row_len: int, side: int, seed: int = 0) -> Batch:
  """Rows filled with side^2 images (row_len // (side/16)^2 per row), random pixels."""
  rng = np.random.default_rng(seed)
  per_row = row_len // (side // 16) ** 2
  seqs = [tokens.to_tokens(np.tanh(rng.normal(size=(side, side, 3))).astype(np.float32))
          for _ in range(rows * per_row)]
  return packing.pack(seqs, row_len, per_row, num_rows=rows)


def paper_batch(rows: int, row_len: int, slots: int = 64, seed: int = 0) -> Batch:
  """One batch of the stage-1 paper stream's image sizes, packed by the real pipeline packer."""
  import grain  # pylint: disable=import-outside-toplevel
  import bench_data  # pylint: disable=import-outside-toplevel
  from data_pipelines import default_task_config  # pylint: disable=import-outside-toplevel
  from data_pipelines.pack_stage import PackIterDataset, PackOptions  # pylint: disable=import-outside-toplevel
  lengths = bench_data._PaperLengths(0.0, row_len)  # pylint: disable=protected-access
  lengths.image_cfg = default_task_config("image_recon", stage=1, preset="paper").image
  ds = grain.MapDataset.range(10 ** 9).random_map(lambda i, r: lengths(i, r), seed=seed)
  batch, _ = next(iter(PackIterDataset(ds, PackOptions(rows, row_len, slots, lookahead=1.5,
                                                       read_threads=0, patch_dim=768))))
  real = batch.segment_ids > 0
  noise = np.random.default_rng(seed).uniform(-1, 1, (int(real.sum()), batch.patches.shape[-1]))
  patches = batch.patches.copy()
  patches[real] = noise.astype(np.float32)
  return batch.replace(patches=patches)


class _Repeat:
  """The trainer's data interface around one fixed batch."""

  def __init__(self, batch):
    self.batch = batch

  def __next__(self):
    return self.batch

  def get_state(self):
    return {}

  def set_state(self, s):
    del s


def set_attention(model_cfg: ml_collections.ConfigDict, impl: str) -> None:
  """Selects an attention implementation by name (`config.ATTENTION_IMPLS`)."""
  model_cfg.attention_impl = impl


class Step:
  """The real trainer's step on one fixed batch, split into its two jitted halves."""

  def __init__(self, preset: str, batch: Batch, *, dtype="bfloat16", fsdp: int = -1,
               remat: str | None = None, attention: str | None = None,
               scan_layers: bool | None = None):
    cfg = stage1_image.get_config(preset)
    cfg.model.dtype = dtype
    if remat is not None:
      cfg.model.remat = remat
    if scan_layers is not None:
      cfg.model.scan_layers = scan_layers
    if attention:
      set_attention(cfg.model, attention)
    cfg.loss.update(lpips=0.0, gram=0.0, clip=0.0, sem=0.0)
    cfg.tasks = ml_collections.ConfigDict({"image_recon": {"accum_steps": 1}})
    cfg.mesh.data, cfg.mesh.fsdp = 1, fsdp
    cfg.total_steps, cfg.log_every, cfg.ckpt_every = 10 ** 6, 10 ** 6, 10 ** 6
    self.cfg, self.host = cfg, batch
    data = _Repeat(batch)
    self.task = tokenizer_task.TokenizerTask(cfg, lambda c: {"image_recon": data})
    self.loop = loop_lib.Loop(self.task, tempfile.mkdtemp())
    self.state = self.loop.template.init_sharded()
    self.terms = self.loop.schedule[0].key
    self.device_batch = loop_lib.global_batch(batch_lib.for_device(batch), self.loop.mesh)

  def grads(self):
    """One micro-batch's gradients (forward + backward)."""
    fns = self.loop.fns
    return fns.micro(None, None, self.state.params, self.loop.frozen, self.device_batch,
                     jax.random.PRNGKey(0), self.terms)[0]

  def update(self, grads):
    """Applies `grads` (the optimiser update; the state is donated and replaced)."""
    self.state, stats = self.loop.fns.update(self.state, grads, jnp.float32(1))
    return stats

  def __call__(self):
    return self.update(self.grads())

  def flops(self) -> float:
    st = metrics_lib.batch_stats(self.host)
    return metrics_lib.train_flops(self.task.model_cfg, st["tokens"], st["attn_pairs"],
                                   self.host.patches.shape[-1])


def measure(preset: str, batch: Batch, *, steps: int = 10, dtype="bfloat16",
            fsdp: int = -1, remat: str | None = None, attention: str | None = None,
            scan_layers: bool | None = None) -> dict:
  """Compiles and times `steps` train steps on `batch`; returns tokens, seconds and rates."""
  step = Step(preset, batch, dtype=dtype, fsdp=fsdp, remat=remat, attention=attention,
              scan_layers=scan_layers)
  t0 = time.perf_counter()
  jax.block_until_ready(step())
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    stats = step()
  jax.block_until_ready(stats)
  step_s = (time.perf_counter() - t0) / steps
  tokens = metrics_lib.batch_stats(batch)["tokens"]
  flops = step.flops()
  peak = metrics_lib.peak_flops_per_device(step.cfg.peak_flops_per_device)
  mem = jax.local_devices()[0].memory_stats() or {}
  return dict(tokens=tokens, shape=tuple(batch.segment_ids.shape), step_s=step_s,
              compile_s=compile_s, tokens_s=tokens / step_s, tflops=flops / step_s / 1e12,
              mfu=(flops / step_s / (peak * jax.device_count())) if peak else None,
              peak_bytes=mem.get("peak_bytes_in_use"),
              model_cfg=step.task.model_cfg)


def describe(preset: str, dtype: str, r: dict) -> str:
  dev = jax.devices()[0]
  mfu = f", MFU {r['mfu']:.1%}" if r["mfu"] is not None else " (no peak FLOP/s known here)"
  mem = f", peak memory {r['peak_bytes'] / 2 ** 30:.1f} GiB" if r["peak_bytes"] else ""
  return (f"{preset} on {jax.device_count()} x {dev.device_kind} ({dev.platform}), {dtype}: "
          f"batch {r['shape'][0]} x {r['shape'][1]} ({r['tokens']} real tokens), first step "
          f"(compile) {r['compile_s']:.1f} s, step {r['step_s'] * 1e3:.1f} ms, "
          f"{r['tokens_s']:,.0f} tokens/s, {r['tflops']:.2f} TFLOP/s{mfu}{mem}")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--preset", default="so400m")
  p.add_argument("--rows", type=int, default=8)
  p.add_argument("--row-len", type=int, default=4096)
  p.add_argument("--side", type=int, default=256)
  p.add_argument("--stream", choices=["grid", "paper"], default="grid")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--fsdp", type=int, default=-1)
  p.add_argument("--remat", default=None, help="none | full | dots (default: the config's)")
  p.add_argument("--attention", default=None,
                 help="attention implementation name (default: the config's)")
  a = p.parse_args()
  batch = (paper_batch(a.rows, a.row_len) if a.stream == "paper"
           else grid_batch(a.rows, a.row_len, a.side))
  r = measure(a.preset, batch, steps=a.steps, dtype=a.dtype, fsdp=a.fsdp, remat=a.remat,
              attention=a.attention)
  print(describe(a.preset, a.dtype, r) + (f", attention {a.attention}" if a.attention else ""))


if __name__ == "__main__":
  main()
