"""Runs an eval config's tasks on a `Tokenizer` held in memory; writes the report and pictures.

    report = evaluate(tokenizer, cfg, output_dir="eval/")        # one shot
    ev = Evaluator(cfg)                                           # in a training loop:
    report = ev(tokenizer, output_dir=f"eval/{step}")             # networks load once

The eval config (see experiments/eval_*.py): `tasks` maps a task name to a ConfigDict with `kind`
(image_recon | video_recon | zero_shot | image_text_retrieval | video_text_retrieval |
zero_shot_3d), `data` (see `atoken_jax.eval.data`) and the kind's options; top-level `batch_size`,
`posterior`, `seed`, `quantize`, `features` / `text` (see `atoken_jax.eval.resources`) and
`visuals` (images per grid, videos, video_format mp4|gif, fps).

The returned report: {"name", "tasks": {name: {"kind", "count", "metrics", "per_item",
"skipped", "notes"[, "examples"]}}, "notes", "elapsed_s"}; metrics are floats (None when not
computed); reconstruction tasks keep uint8 (original, reconstruction) `examples` for pictures
(e.g. TensorBoard in training), which report.json leaves out.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any

from atoken_jax.eval import reconstruction, report as report_lib, understanding, visuals
from atoken_jax.eval.resources import Resources, TextSide

KINDS = ("image_recon", "video_recon", "zero_shot", "image_text_retrieval",
         "video_text_retrieval", "zero_shot_3d")


def _progress_bar(enabled: bool):
  if not enabled:
    return lambda it, **_: it
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return lambda it, total=None, desc=None: tqdm(it, total=total, desc=desc, unit="item",
                                                dynamic_ncols=True)


class Evaluator:
  """Holds the frozen networks of one eval config; call it with a tokenizer."""

  def __init__(self, cfg, text: TextSide | None = None):
    self.cfg = cfg
    self.resources = Resources(cfg, text)
    for name, task in cfg.tasks.items():
      if task.kind not in KINDS:
        raise ValueError(f"task {name}: unknown kind {task.kind!r}; choose from {KINDS}")

  def run_task(self, tokenizer, name: str, task, progress) -> dict[str, Any]:
    """One task's result dict; `progress(iterable, total=)` wraps the item loop."""
    cfg, res = self.cfg, self.resources
    common = dict(progress=progress)
    if task.kind == "image_recon":
      return reconstruction.image_reconstruction(
          tokenizer, task, res, batch_size=int(cfg.get("batch_size", 8)),
          posterior=cfg.get("posterior", "mean"), seed=int(cfg.get("seed", 0)),
          quantize=bool(cfg.get("quantize", True)), keep=_visual(cfg, "images", 8), **common)
    if task.kind == "video_recon":
      return reconstruction.video_reconstruction(
          tokenizer, task, res, posterior=cfg.get("posterior", "mean"),
          seed=int(cfg.get("seed", 0)), quantize=bool(cfg.get("quantize", True)),
          keep=_visual(cfg, "videos", 2), **common)
    if task.kind == "video_text_retrieval":
      return understanding.video_text_retrieval(tokenizer, task, res, **common)
    fn = getattr(understanding, task.kind)
    return fn(tokenizer, task, res, batch_size=int(cfg.get("batch_size", 8)), **common)

  def __call__(self, tokenizer, output_dir: str | None = None, progress: bool = False,
               name: str = "", checkpoint: str = "") -> dict[str, Any]:
    start = time.time()
    bar = _progress_bar(progress)
    tasks = {}
    for tname, task in self.cfg.tasks.items():
      if not task.get("enabled", True):
        continue
      t0 = time.time()
      tasks[tname] = self.run_task(tokenizer, tname, task, functools.partial(bar, desc=tname))
      tasks[tname]["elapsed_s"] = round(time.time() - t0, 3)
      tasks[tname]["title"] = task.get("title", "") or tname
    out = {"name": name or self.cfg.get("name", "") or "checkpoint", "checkpoint": checkpoint,
           "tasks": tasks, "notes": self.resources.notes(),
           "elapsed_s": round(time.time() - start, 3)}
    if output_dir:
      write_outputs(out, self.cfg, output_dir)
    return out


def _visual(cfg, key: str, default: int) -> int:
  v = cfg.get("visuals", None)
  return int(v.get(key, default)) if v is not None else default


def write_outputs(report: dict, cfg, directory: str) -> dict[str, Any]:
  """report.json, report.md, `<task>_grid.png` and `<task>_<k>.mp4|gif` under `directory`."""
  files = report_lib.write_all(report, directory)
  vcfg = cfg.get("visuals", None)
  fmt = vcfg.get("video_format", "mp4") if vcfg is not None else "mp4"
  fps = int(vcfg.get("fps", 8)) if vcfg is not None else 8
  pictures = []
  for tname, res in report["tasks"].items():
    examples = res.get("examples") or []
    if not examples:
      continue
    if res["kind"] == "image_recon":
      pictures.append(visuals.write_grid(examples, os.path.join(directory, f"{tname}_grid.png")))
    elif res["kind"] == "video_recon":
      for k, (orig, rec) in enumerate(examples):
        pictures.append(visuals.write_side_by_side(
            orig, rec, os.path.join(directory, f"{tname}_{k}.{fmt}"), fps))
  files["pictures"] = pictures
  report["files"] = files
  report_lib.write_json(report, files["json"])  # again, now listing the pictures
  return files


def evaluate(tokenizer, cfg, output_dir: str | None = None, progress: bool = False,
             text: TextSide | None = None, **kw) -> dict[str, Any]:
  """One-shot `Evaluator(cfg, text)(tokenizer, output_dir, progress)`; see module docstring."""
  return Evaluator(cfg, text)(tokenizer, output_dir=output_dir, progress=progress, **kw)
