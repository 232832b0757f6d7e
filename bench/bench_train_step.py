"""Times the real train step (one image-reconstruction micro-batch + update, bf16 compute,
float32 master weights) and prints tokens/s and MFU. Ready for a lent GPU/TPU; runs on CPU
with `--preset tiny` for a smoke check.

  python bench/bench_train_step.py --preset so400m --rows 8 --row-len 4096 --steps 10

Objective: L1 + KL (the frozen perceptual / semantic networks are off, so MFU counts only the
tokenizer's own FLOPs). Batches: full rows of 256^2 images (256 tokens each), synthetic pixels.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from atoken_jax import packing, tokens
from atoken_jax.train import metrics as metrics_lib
from atoken_jax.train import loop as loop_lib
from atoken_jax.train import tokenizer_task
from experiments import stage1_image


class _Batches:
  def __init__(self, rows, row_len, side):
    rng = np.random.default_rng(0)
    per_row = row_len // (side // 16) ** 2
    seqs = [tokens.to_tokens(np.tanh(rng.normal(size=(side, side, 3))).astype(np.float32))
            for _ in range(rows * per_row)]
    b = packing.pack(seqs, row_len, per_row, num_rows=rows)
    self.batch = {k: getattr(b, k) for k in ("patches", "coords", "segment_ids", "sample_ids",
                                             "tile_index", "pos_row_weights",
                                             "pos_col_weights", "sample_index")}
    self.batch["modality"] = np.where(b.sample_index >= 0, 0, -1).astype(np.int32)
    self.batch["task"] = np.where(b.sample_index >= 0, 0, -1).astype(np.int32)

  def __next__(self):
    return self.batch

  def get_state(self):
    return {}

  def set_state(self, s):
    del s


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--preset", default="so400m")
  p.add_argument("--rows", type=int, default=8)
  p.add_argument("--row-len", type=int, default=4096)
  p.add_argument("--side", type=int, default=256)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--fsdp", type=int, default=-1)
  a = p.parse_args()
  cfg = stage1_image.get_config(a.preset)
  cfg.model.dtype = a.dtype
  cfg.loss.update(lpips=0.0, gram=0.0, clip=0.0, sem=0.0)
  cfg.tasks = ml_collections.ConfigDict({"image_recon": {"accum_steps": 1}})
  cfg.mesh.data, cfg.mesh.fsdp = 1, a.fsdp
  cfg.total_steps, cfg.log_every, cfg.ckpt_every = 10 ** 6, 10 ** 6, 10 ** 6
  data = _Batches(a.rows, a.row_len, a.side)
  import tempfile  # pylint: disable=import-outside-toplevel
  task = tokenizer_task.TokenizerTask(cfg, lambda c: {"image_recon": data})
  t = loop_lib.Loop(task, tempfile.mkdtemp())
  state = t.template.init_sharded()
  micro = t.schedule[0]
  terms = micro.key
  host = task.device_inputs(micro, next(data))
  batch = loop_lib.global_batch(host, t.mesh)

  def one_step(state):
    grads, _ = t.fns.micro(t.fns.zeros(), None, state.params, t.frozen, batch,
                           jax.random.PRNGKey(0), terms)
    state, stats = t.fns.update(state, grads, jnp.float32(1))
    return state, stats

  t0 = time.perf_counter()
  state, stats = one_step(state)
  jax.block_until_ready(stats)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(a.steps):
    state, stats = one_step(state)
  jax.block_until_ready(stats)
  step_s = (time.perf_counter() - t0) / a.steps
  st = metrics_lib.batch_stats(host)
  flops = metrics_lib.train_flops(task.model_cfg, st["tokens"], st["attn_pairs"])
  peak = metrics_lib.peak_flops_per_device(cfg.peak_flops_per_device)
  dev = jax.devices()[0]
  print(f"{a.preset} on {jax.device_count()} x {dev.device_kind} ({dev.platform}), {a.dtype}: "
        f"batch {a.rows} x {a.row_len} ({st['tokens']} real tokens), first step (compile) "
        f"{compile_s:.1f} s, step {step_s * 1e3:.1f} ms, {st['tokens'] / step_s:,.0f} tokens/s, "
        f"{flops / step_s / 1e12:.2f} TFLOP/s"
        + (f", MFU {flops / step_s / (peak * jax.device_count()):.1%}" if peak else
           " (no peak FLOP/s known for this device: pass --config peak)"))
  mem = metrics_lib.memory_in_use_bytes()
  if mem:
    print(f"device memory in use: {mem / 2 ** 30:.1f} GiB")


if __name__ == "__main__":
  main()
