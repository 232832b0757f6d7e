"""The AToken curriculum end to end on the bundled data: stage 1 -> 2 -> 3 -> 4, tiny preset.

  python bench/curriculum.py                      # (`make curriculum`) into workdirs/curriculum
  python bench/curriculum.py --stages 1 2         # a prefix of the curriculum
  python bench/curriculum.py --set 2:total_steps=100

Each stage trains from experiments/stage{1_image,2_video,3_3d,4_fsq}.py:tiny and starts from
the previous stage's workdir (`init.previous_stage`, atoken_jax/train/stages.py: latent 32 ->
48 at stage 2, FSQ at stage 4). Every stage ends with its held-out report (heldout_report.json:
photos, clips from stage 2, voxel features from stage 3, all FSQ-quantised at stage 4, each
next to PCA of equal latent size). A finished stage is not retrained (its workdir resumes).
Writes bench/curriculum.json and bench/curriculum_image_psnr.png; prints a Markdown table and
checks the paper's claim at this scale: every later stage's held-out image PSNR is within 1 dB
of stage 1's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from atoken_jax import config_files  # noqa: E402
from atoken_jax.train import heldout  # noqa: E402
from atoken_jax.train import loop as loop_lib  # noqa: E402
from atoken_jax.train import tokenizer_task  # noqa: E402
from bench import plot_png  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STAGES = {1: "stage1_image", 2: "stage2_video", 3: "stage3_3d", 4: "stage4_fsq"}
WITHIN_DB = 1.0


def _cell(report: dict, modality: str) -> str:
  if modality not in report:
    return "-"
  r = report[modality]
  return f"{r['model']['psnr']:.2f} ({r['pca']['psnr']:.2f})"


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--root", default="workdirs/curriculum")
  ap.add_argument("--stages", type=int, nargs="*", default=[1, 2, 3, 4])
  ap.add_argument("--set", nargs="*", default=[],
                  help="STAGE:key=value overrides, as --config.key=value of `atoken train`")
  ap.add_argument("--out", default=HERE)
  args = ap.parse_args(argv)

  rows, previous = [], ""
  for stage in args.stages:
    overrides = [f"--config.{item.partition(':')[2]}" for item in args.set
                 if int(item.partition(":")[0]) == stage]
    cfg = config_files.load(f"{STAGES[stage]}:tiny", overrides)
    cfg.image_every = 0
    workdir = os.path.join(args.root, f"stage{stage}")
    if stage > 1:
      previous = previous or os.path.join(args.root, f"stage{stage - 1}")
      cfg.init.previous_stage = previous
    t0 = time.perf_counter()
    loop_lib.Loop(tokenizer_task.TokenizerTask(cfg), workdir).run()
    seconds = time.perf_counter() - t0
    with open(os.path.join(workdir, heldout.REPORT_FILE)) as f:
      report = json.load(f)
    rows.append({"stage": stage, "steps": cfg.total_steps, "seconds": seconds,
                 "report": report})
    print(f"stage {stage}: {seconds:.0f} s; " + "; ".join(heldout.summary_lines(report)))
    previous = workdir

  first = next((r for r in rows if r["stage"] == 1), None)
  print("| stage | steps | time (s) | latent | image PSNR (PCA) | video PSNR (PCA) | "
        "voxel-feature PSNR (PCA) | image SSIM |")
  print("|---:|---:|---:|---|---:|---:|---:|---:|")
  for r in rows:
    rep = r["report"]
    latent = f"{rep['latent_dim']}" + (" FSQ" if rep["quantizer"] == "fsq" else "")
    print(f"| {r['stage']} | {r['steps']} | {r['seconds']:.0f} | {latent} | "
          f"{_cell(rep, 'image')} | {_cell(rep, 'video')} | {_cell(rep, 'voxels')} | "
          f"{rep['image']['model']['ssim']:.3f} |")
  claim = None
  if first is not None:
    base = first["report"]["image"]["model"]["psnr"]
    drops = {r["stage"]: base - r["report"]["image"]["model"]["psnr"] for r in rows}
    claim = all(d <= WITHIN_DB for d in drops.values())
    print("image PSNR drop vs stage 1 (dB): " +
          ", ".join(f"stage {s}: {d:+.2f}" for s, d in drops.items()) +
          f" -> within {WITHIN_DB} dB: {'yes' if claim else 'NO'}")
    plot_png.line_plot(
        os.path.join(args.out, "curriculum_image_psnr.png"),
        {"tokenizer": [(r["stage"], r["report"]["image"]["model"]["psnr"]) for r in rows],
         "PCA (latent of the stage)": [(r["stage"], r["report"]["image"]["pca"]["psnr"])
                                       for r in rows],
         "stage 1 - 1 dB": [(rows[0]["stage"], base - WITHIN_DB),
                            (rows[-1]["stage"], base - WITHIN_DB)]},
        title="held-out image PSNR after each curriculum stage (tiny, bundled data)",
        x_label="stage", y_label="dB", dashed=("stage 1 - 1 dB",))
  with open(os.path.join(args.out, "curriculum.json"), "w") as f:
    json.dump({"stages": rows, "within_1db_of_stage1": claim}, f, indent=2)
  print(f"total: {sum(r['seconds'] for r in rows):.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
