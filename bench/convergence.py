"""Held-out PSNR and SSIM over training steps for the tiny preset (`make train`'s job), next to
the PCA baseline of equal latent size (atoken_jax/train/heldout.py).

  python bench/convergence.py                       # trains into workdirs/convergence
  python bench/convergence.py --every 100 --set optim.lr=5e-3

Trains stage 1 tiny on the bundled data's training split with a checkpoint every `--every`
steps (all kept), then scores step 0 (the initialisation) and every checkpoint on the held-out
photos. An existing workdir is resumed, not retrained. Writes bench/convergence.json,
bench/convergence_psnr.png and bench/convergence_ssim.png and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from atoken_jax import config_files  # noqa: E402
from atoken_jax import tokenizer as tokenizer_lib  # noqa: E402
from atoken_jax.train import heldout  # noqa: E402
from atoken_jax.train import loop as loop_lib  # noqa: E402
from atoken_jax.train import restore  # noqa: E402
from atoken_jax.train import tokenizer_task  # noqa: E402
from bench import plot_png  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def score(cfg, model_cfg, model_params) -> dict:
  tok = tokenizer_lib.Tokenizer(model_cfg, jax.device_get(model_params))
  report, _ = heldout.evaluate(tok, cfg)
  return report["image"]


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdir", default="workdirs/convergence")
  ap.add_argument("--every", type=int, default=100, help="checkpoint (and score) every N steps")
  ap.add_argument("--set", nargs="*", default=[],
                  help="config overrides key=value, as --config.key=value of `atoken train`")
  ap.add_argument("--out", default=HERE, help="where the JSON and the plots go")
  args = ap.parse_args(argv)

  cfg = config_files.load("stage1_image:tiny", [f"--config.{kv}" for kv in args.set])
  cfg.ckpt_every, cfg.keep, cfg.image_every = args.every, 10_000, 0
  loop = loop_lib.Loop(tokenizer_task.TokenizerTask(cfg), args.workdir)
  model_cfg = loop.task.model_cfg
  t0 = time.perf_counter()
  loop.run()
  train_s = time.perf_counter() - t0

  rows = [{"step": 0, **score(cfg, model_cfg, loop.template.init_sharded().params["model"])}]
  for step in sorted(loop.checkpointer.steps()):
    run = restore.load_run(args.workdir, step)
    rows.append({"step": int(step), **score(cfg, run.model_cfg, run.params["model"])})
  pca = rows[0]["pca"]
  k = model_cfg.latent_dim
  result = {"config": "experiments/stage1_image.py:tiny", "overrides": args.set,
            "train_seconds": train_s, "latent_dim": k, "pca": pca,
            "steps": [{"step": r["step"], **r["model"]} for r in rows]}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "convergence.json"), "w") as f:
    json.dump(result, f, indent=2)
  last = rows[-1]["step"]
  for metric, unit in (("psnr", "dB"), ("ssim", "")):
    plot_png.line_plot(
        os.path.join(args.out, f"convergence_{metric}.png"),
        {"tokenizer": [(r["step"], r["model"][metric]) for r in rows],
         f"PCA-{k}": [(0, pca[metric]), (last, pca[metric])]},
        title=f"held-out photos ({len(pca['psnr_each'])}), {metric.upper()}, stage 1 tiny",
        x_label="step", y_label=unit or metric, dashed=(f"PCA-{k}",))
  print(f"training: {train_s:.0f} s ({last} steps)")
  print(f"| step | PSNR (dB) | SSIM | PCA-{k} PSNR | PCA-{k} SSIM |")
  print("|---:|---:|---:|---:|---:|")
  for r in rows:
    m = r["model"]
    print(f"| {r['step']} | {m['psnr']:.2f} | {m['ssim']:.3f} | {pca['psnr']:.2f} | "
          f"{pca['ssim']:.3f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
