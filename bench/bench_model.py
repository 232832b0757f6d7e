"""Encode + decode throughput (tokens/s) of the JAX model vs our PyTorch reference module on
the same weights, and the analytic forward FLOPs per token of the presets.

  python bench/bench_model.py [--preset base] [--images 4] [--side 256] [--repeats 3]

Same inputs for both: `--images` images of `--side` px (side/16 squared tokens each), float32,
the posterior mean decoded. The JAX side is jitted once (compile time excluded) and timed with
block_until_ready; the PyTorch side runs in inference mode with torch's default threads.
"""
from __future__ import annotations

import argparse
import platform
import time

import jax
import numpy as np

import atoken_jax as aj
from atoken_jax import config as config_lib
from atoken_jax.interop import ml_atoken


def flops_table() -> None:
  print("analytic forward FLOPs per token (encode + decode, 2 per MAC)")
  for preset in ("tiny", "base", "so400m"):
    cfg = config_lib.model_config(preset)
    per = {n: cfg.flops_per_token(n) for n in (256, 1024, 4096)}
    print(f"  {preset:7s} " + "  ".join(f"L={n}: {v / 1e9:7.2f} GFLOP" for n, v in per.items()))


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--preset", default="base")
  p.add_argument("--images", type=int, default=4)
  p.add_argument("--side", type=int, default=256)
  p.add_argument("--repeats", type=int, default=3)
  a = p.parse_args()
  import torch  # pylint: disable=import-outside-toplevel
  from atoken_jax.interop.torch_atoken import TorchAToken  # pylint: disable=import-outside-toplevel

  print(f"machine: {platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
  flops_table()
  cfg = config_lib.model_config(a.preset)
  state = ml_atoken.random_state_dict(cfg, seed=0)
  tok = aj.Tokenizer(cfg, ml_atoken.state_dict_to_params(state, cfg))
  ref = TorchAToken.from_state_dict(state, cfg).eval()
  rng = np.random.default_rng(0)
  images = [rng.uniform(-1, 1, (a.side, a.side, 3)).astype(np.float32) for _ in range(a.images)]
  n_tokens = a.images * (a.side // 16) ** 2

  def run_jax():
    enc = tok.encode(images)
    return tok.decode(enc)

  from atoken_jax import tokens as tokens_lib  # pylint: disable=import-outside-toplevel
  seqs = [tokens_lib.to_tokens(x) for x in images]
  feats = torch.from_numpy(np.concatenate([s.patches for s in seqs]))
  coords = torch.from_numpy(np.concatenate(
      [np.concatenate([np.full((len(s), 1), i), s.coords], 1) for i, s in enumerate(seqs)])
  ).int()

  def run_torch():
    with torch.inference_mode():
      _, _, mean, _ = ref.encode(feats, coords)
      return ref.decode(mean, coords)

  run_jax()  # compile
  run_torch()
  timings = {}
  for name, fn in (("jax", run_jax), ("torch", run_torch)):
    best = float("inf")
    for _ in range(a.repeats):
      t = time.perf_counter()
      fn()
      best = min(best, time.perf_counter() - t)
    timings[name] = best
  cfg_flops = cfg.flops_per_token((a.side // 16) ** 2) * n_tokens
  for name, t in timings.items():
    print(f"{name:6s} {a.preset}: {n_tokens / t:9.1f} tokens/s  ({t * 1e3:.0f} ms for "
          f"{a.images} x {a.side}^2, {cfg_flops / t / 1e9:.1f} GFLOP/s)")
  print(f"ratio jax/torch throughput: {timings['torch'] / timings['jax']:.2f}")


if __name__ == "__main__":
  main()
