"""Held-out PSNR and SSIM over training steps for a tiny job (`make train`'s by default), next
to the PCA baseline of equal latent size (atoken_jax/train/heldout.py).

  python bench/convergence.py                       # stage 1 tiny into workdirs/convergence
  python bench/convergence.py --every 100 --set optim.lr=5e-3
  python bench/convergence.py --config stage2_video:tiny --previous workdirs/convergence \\
      --workdir workdirs/convergence_s2 --every 150 --out /tmp/s2   # photos and clips

Trains the config (a tiny stage file, from `--previous`'s workdir when given:
`init.previous_stage`) on the bundled data's training split with a checkpoint every `--every`
steps (all kept), then scores step 0 (the initialisation; the handed-off model with
`--previous`) and every checkpoint on the held-out split of each modality the job
reconstructs (photos; clips from stage 2). An existing workdir is resumed, not retrained.
Writes convergence.json, convergence_psnr.png and convergence_ssim.png into `--out` and prints
a Markdown table.
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
NAMES = {"image": "photos", "video": "clips"}


def score(cfg, model_cfg, model_params) -> dict:
  """{modality: {"model": scores, "pca": scores}} of the held-out photos and clips."""
  tok = tokenizer_lib.Tokenizer(model_cfg, jax.device_get(model_params))
  report, _ = heldout.evaluate(tok, cfg)
  return {m: report[m] for m in NAMES if m in report}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default="stage1_image:tiny", help="FILE[:arg] of `atoken train`")
  ap.add_argument("--previous", default="", help="the previous stage's workdir (stages 2-4)")
  ap.add_argument("--workdir", default="workdirs/convergence")
  ap.add_argument("--every", type=int, default=100, help="checkpoint (and score) every N steps")
  ap.add_argument("--set", nargs="*", default=[],
                  help="config overrides key=value, as --config.key=value of `atoken train`")
  ap.add_argument("--out", default=HERE, help="where the JSON and the plots go")
  args = ap.parse_args(argv)

  cfg = config_files.load(args.config, [f"--config.{kv}" for kv in args.set])
  cfg.ckpt_every, cfg.keep, cfg.image_every = args.every, 10_000, 0
  cfg.heldout_report.enabled = False  # every checkpoint is scored below
  if args.previous:
    cfg.init.previous_stage = args.previous
  loop = loop_lib.Loop(tokenizer_task.TokenizerTask(cfg), args.workdir)
  model_cfg = loop.task.model_cfg
  t0 = time.perf_counter()
  loop.run()
  train_s = time.perf_counter() - t0

  start = restore.load_run(args.previous, ema=cfg.init.use_ema) if args.previous else None
  rows = [{"step": 0, **(score(cfg, start.model_cfg, start.params["model"]) if start else
                         score(cfg, model_cfg, loop.template.init_sharded().params["model"]))}]
  for step in sorted(loop.checkpointer.steps()):
    run = restore.load_run(args.workdir, step)
    rows.append({"step": int(step), **score(cfg, run.model_cfg, run.params["model"])})
  k, last = model_cfg.latent_dim, rows[-1]["step"]
  modalities = [m for m in NAMES if m in rows[-1]]
  # step 0 of a hand-off is scored at the previous stage's latent size (its own PCA)
  pca = {m: rows[-1][m]["pca"] for m in modalities}
  result = {"config": args.config, "previous": args.previous, "overrides": args.set,
            "train_seconds": train_s, "latent_dim": k,
            "modalities": {m: {"pca": pca[m], "steps": [{"step": r["step"], **r[m]["model"]}
                                                        for r in rows if m in r]}
                           for m in modalities}}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "convergence.json"), "w") as f:
    json.dump(result, f, indent=2)
  for metric, unit in (("psnr", "dB"), ("ssim", "")):
    lines = {}
    for m in modalities:
      lines[f"tokenizer, {NAMES[m]}"] = [(r["step"], r[m]["model"][metric]) for r in rows
                                         if m in r]
      lines[f"PCA-{k}, {NAMES[m]}"] = [(0, pca[m][metric]), (last, pca[m][metric])]
    plot_png.line_plot(
        os.path.join(args.out, f"convergence_{metric}.png"), lines,
        title=f"held-out {' and '.join(NAMES[m] for m in modalities)}, {metric.upper()}, "
              f"{args.config}", x_label="step", y_label=unit or metric,
        dashed=tuple(n for n in lines if n.startswith("PCA")))
  print(f"training: {train_s:.0f} s ({last} steps)")
  head = " | ".join(f"{NAMES[m]} PSNR (dB) | {NAMES[m]} SSIM" for m in modalities)
  print(f"PCA-{k}: " + ", ".join(f"{NAMES[m]} {pca[m]['psnr']:.2f} dB / SSIM "
                                 f"{pca[m]['ssim']:.3f}" for m in modalities))
  print(f"| step | {head} |")
  print("|---:|" + "---:|---:|" * len(modalities))
  for r in rows:
    cells = " | ".join(f"{r[m]['model']['psnr']:.2f} | {r[m]['model']['ssim']:.3f}"
                       if m in r else "- | -" for m in modalities)
    print(f"| {r['step']} | {cells} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
