"""The evaluation report: JSON (everything, per item) and a markdown summary in the paper's layout.

Markdown tables mirror the paper (notes §6): Table 4 (image reconstruction: PSNR | SSIM | LPIPS |
rFID per dataset), Table 6 (video: PSNR/SSIM/LPIPS/rFVD per dataset), Table 5 (zero-shot top-1,
retrieval R@1 T→I | I→T), Table 7 (video–text R@1/5/10 per direction), Table 8 (3D accuracy).
Numbers are formatted as there: PSNR 2 decimals, SSIM / LPIPS / rFID 3 decimals without the
leading zero, rFVD 2 decimals, percentages 1 decimal; "–" marks a metric that was not computed.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

DASH = "–"


def _num(v, digits: int, strip_zero: bool = False) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return DASH
  s = f"{v:.{digits}f}"
  if strip_zero and s.startswith("0."):
    s = s[1:]
  return s


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items() if k != "examples"}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, float) and not math.isfinite(x):
    return str(x)
  return x


def write_json(report: dict, path: str) -> str:
  with open(path, "w") as f:
    json.dump(_jsonable(report), f, indent=2, allow_nan=False)
  return path


def _table(header: list[str], row: list[str]) -> list[str]:
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
          "| " + " | ".join(row) + " |", ""]


def markdown(report: dict) -> str:
  """The summary tables of `report` (see module docstring)."""
  name = report.get("name") or "checkpoint"
  tasks: dict[str, Any] = report.get("tasks", {})
  by_kind: dict[str, list] = {}
  for tname, res in tasks.items():
    by_kind.setdefault(res["kind"], []).append((res.get("title") or tname, res))
  out = [f"# AToken evaluation: {name}", ""]
  if report.get("checkpoint"):
    out += [f"checkpoint: `{report['checkpoint']}`", ""]

  if "image_recon" in by_kind:
    header, row = ["Method"], [name]
    for title, r in by_kind["image_recon"]:
      m = r["metrics"]
      header += [f"{title} PSNR", "SSIM", "LPIPS", "rFID"]
      row += [_num(m["psnr"], 2), _num(m["ssim"], 3, True), _num(m["lpips"], 3, True),
              _num(m["rfid"], 3, True)]
    out += ["## Image reconstruction (Table 4 layout)", ""] + _table(header, row)

  if "video_recon" in by_kind:
    header, row = ["Method"], [name]
    for title, r in by_kind["video_recon"]:
      m = r["metrics"]
      header.append(f"{title} PSNR/SSIM/LPIPS/rFVD")
      row.append("/".join([_num(m["psnr"], 2), _num(m["ssim"], 3, True),
                           _num(m["lpips"], 3, True), _num(m["rfvd"], 2)]))
    out += ["## Video reconstruction (Table 6 layout)", ""] + _table(header, row)

  if "zero_shot" in by_kind or "image_text_retrieval" in by_kind:
    header, row = ["Method"], [name]
    for title, r in by_kind.get("zero_shot", []):
      header.append(f"{title} top-1")
      row.append(_num(r["metrics"].get("top1"), 1))
    for title, r in by_kind.get("image_text_retrieval", []):
      header += [f"{title} T→I R@1", "I→T R@1"]
      row += [_num(r["metrics"]["t2i"]["R@1"], 1), _num(r["metrics"]["i2t"]["R@1"], 1)]
    out += ["## Zero-shot image understanding (Table 5 layout)", ""] + _table(header, row)

  if "video_text_retrieval" in by_kind:
    header, row = ["Method"], [name]
    for title, r in by_kind["video_text_retrieval"]:
      for direction, label in (("t2v", "T→V"), ("v2t", "V→T")):
        m = r["metrics"][direction]
        header.append(f"{title} {label} R@1/5/10")
        row.append("/".join(_num(m[k], 1) for k in ("R@1", "R@5", "R@10")))
    out += ["## Zero-shot video–text retrieval (Table 7 layout)", ""] + _table(header, row)

  if "zero_shot_3d" in by_kind:
    header, row = ["Method"], [name]
    for title, r in by_kind["zero_shot_3d"]:
      header.append(f"{title} zero-shot acc")
      row.append(_num(r["metrics"].get("top1"), 1))
    out += ["## 3D zero-shot classification (Table 8 layout)", ""] + _table(header, row)

  out += ["## Details", "", "| Task | Kind | Items | Skipped |", "|---|---|---|---|"]
  for tname, res in tasks.items():
    out.append(f"| {tname} | {res['kind']} | {res['count']} | {len(res.get('skipped', []))} |")
  out.append("")
  notes = list(report.get("notes", [])) + [f"{t}: {n}" for t, r in tasks.items()
                                           for n in r.get("notes", [])]
  if notes:
    out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
  return "\n".join(out)


def write_markdown(report: dict, path: str) -> str:
  with open(path, "w") as f:
    f.write(markdown(report))
  return path


def write_all(report: dict, directory: str) -> dict[str, str]:
  """report.json + report.md under `directory`; returns their paths."""
  os.makedirs(directory, exist_ok=True)
  return {"json": write_json(report, os.path.join(directory, "report.json")),
          "markdown": write_markdown(report, os.path.join(directory, "report.md"))}
