"""Where one train step's time goes: matmuls against everything else, and the memory each half
allocates afresh per call.

  python bench/profile_step.py --preset base --images-per-row 16 --dtype float32

Runs the real trainer's step (`bench_train_step.Step`: rows of 128^2 images, L1 + KL) under
`jax.profiler`, once for the gradient half and once for the update, and sums the trace's XLA op
events by kind: matmul (dot and YNNPACK/oneDNN fusions) or other (elementwise, copies and
transposes, reductions, loops). The analytic FLOPs over the matmul time give the rate the
matmuls ran at; the other kinds are what a step spends beyond its matmuls. It also prints each
half's XLA temporary buffer and the page faults per call: XLA's CPU runtime allocates those
buffers afresh for every execution, so each call faults them in again.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import resource
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_train_step  # noqa: E402
from bench import machine  # noqa: E402

MATMUL = re.compile(r"^(dot|ynn_fusion|onednn|custom-call|.*gemm|.*matmul)", re.I)
WRAPPERS = ("ThunkExecutor", "$", "Pjit", "CommonPjRt", "SlinkyThreadPool", "PjRt",
            "ThreadpoolListener", "end: ")


def op_kind(name: str) -> str:
  """An XLA op event's kind: "matmul" or its fusion kind with numbers dropped."""
  return "matmul" if MATMUL.match(name) else re.sub(r"[.\d]+$", "", name)


def traced_seconds(fn) -> tuple[float, dict[str, float]]:
  """(wall seconds of one fn(), {op kind: seconds summed over XLA's threads})."""
  folder = tempfile.mkdtemp()
  jax.profiler.start_trace(folder, create_perfetto_trace=True)
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  wall = time.perf_counter() - t0
  jax.profiler.stop_trace()
  path = glob.glob(os.path.join(folder, "plugins", "profile", "*", "perfetto_trace.json.gz"))[0]
  with gzip.open(path) as f:
    events = json.load(f)["traceEvents"]
  threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
  by_thread = collections.defaultdict(list)
  for e in events:
    name = threads.get((e.get("pid"), e.get("tid")), "")
    if (e.get("ph") == "X" and "XLA" in name and "PjRt" not in name
        and not e["name"].startswith(WRAPPERS)):
      by_thread[name].append(e)
  kinds: dict[str, float] = collections.defaultdict(float)
  for evs in by_thread.values():  # leaf events only: a loop's event encloses its body's ops
    evs.sort(key=lambda e: e["ts"])
    for e, nxt in zip(evs, evs[1:] + [None]):
      if nxt is None or nxt["ts"] >= e["ts"] + e["dur"]:
        kinds[op_kind(e["name"])] += e["dur"] / 1e6
  return wall, dict(kinds)


def faults_per_call(fn, calls: int = 2) -> tuple[float, float]:
  """(seconds, minor page faults) per call of fn, after a warm-up call."""
  jax.block_until_ready(fn())
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  t0 = time.perf_counter()
  for _ in range(calls):
    jax.block_until_ready(fn())
  return ((time.perf_counter() - t0) / calls,
          (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="base")
  p.add_argument("--images-per-row", type=int, default=16)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--remat", default=None)
  a = p.parse_args(argv)
  print(machine.describe(f"jax {jax.__version__} ({jax.devices()[0].platform})"), flush=True)
  batch = bench_train_step.grid_batch(1, 64 * a.images_per_row, 128)
  step = bench_train_step.Step(a.preset, batch, dtype=a.dtype, remat=a.remat)
  grads = step.grads()
  halves = {"gradients (forward + backward)": step.grads,
            "update (clip, AdamW, EMA, skip check)": lambda: step.update(grads)}
  jax.block_until_ready(step.update(grads))
  flops = step.flops()
  print(f"\n{a.preset}, {a.dtype}, remat {step.task.model_cfg.remat}, one row of "
        f"{a.images_per_row} x 128^2 images ({batch.segment_ids.shape[1]} tokens); analytic "
        f"train FLOPs {flops / 1e12:.2f} TFLOP\n")
  print("| half | wall s | matmul s | other s | top other kinds (s) | temp GiB | "
        "page faults / call |")
  print("|---|---|---|---|---|---|---|")
  fns = step.loop.fns
  temps = {
      "gradients (forward + backward)": next(iter(fns._micro.values())).lower(  # pylint: disable=protected-access
          None, None, step.state.params, step.loop.frozen, step.device_batch,
          jax.random.PRNGKey(0)).compile().memory_analysis().temp_size_in_bytes,
      "update (clip, AdamW, EMA, skip check)": fns.update.lower(
          step.state, grads, 1.0).compile().memory_analysis().temp_size_in_bytes}
  matmul_s = 0.0
  for name, fn in halves.items():
    wall, kinds = traced_seconds(fn)
    _, faults = faults_per_call(fn)
    mm = kinds.pop("matmul", 0.0)
    matmul_s += mm
    top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:4])
    print(f"| {name} | {wall:.2f} | {mm:.2f} | {sum(kinds.values()):.2f} | {top} | "
          f"{temps[name] / 2 ** 30:.2f} | {faults:,.0f} |", flush=True)
  print(f"\nmatmuls ran at {flops / max(matmul_s, 1e-9) / 1e9:.0f} GFLOP/s (analytic FLOPs / "
        "matmul seconds; seconds are summed over XLA's threads, so ops that overlap count "
        "twice)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
