"""`atoken export`: any training checkpoint -> an ml-atoken checkpoint (+ its YAML).

  atoken export --workdir DIR [--step N] [--ema] --format ml-atoken --out FILE.safetensors

The file holds exactly ml-atoken's tensor names and shapes (`load_state_dict(strict=True)`
works there); the YAML beside it (FILE.yaml) carries `model.model_cfg.arch_cfg`.
"""
from __future__ import annotations

import os

import yaml

from atoken_jax import cli_errors
from atoken_jax.interop import ml_atoken
from atoken_jax.train import restore as restore_lib


def export_checkpoint(workdir: str, out: str, step: int | None = None, ema: bool = False,
                      dtype=None) -> tuple[str, int]:
  """Writes `out` (+ `out` with a .yaml suffix); -> (the YAML path, the step exported)."""
  run = restore_lib.load_run(workdir, step, ema)
  if run.is_gs:
    raise ValueError(f"{workdir} is a Gaussian-decoder run; export it with `atoken gs export`")
  ml_atoken.save_ml_atoken(run.params["model"], run.model_cfg, out, dtype)
  yaml_path = os.path.splitext(out)[0] + ".yaml"
  with open(yaml_path, "w") as f:
    yaml.safe_dump({"model": {"model_cfg": {
        "arch_cfg": ml_atoken.arch_cfg_from_config(run.model_cfg)}}}, f, sort_keys=False)
  return yaml_path, run.step


def main(argv: list[str]) -> int:
  p = cli_errors.ArgumentParser(prog="atoken export", description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--step", type=int, default=None, help="default: the newest checkpoint")
  p.add_argument("--ema", action="store_true", help="export the EMA parameters")
  p.add_argument("--format", default="ml-atoken", choices=["ml-atoken"])
  p.add_argument("--out", required=True, help="FILE.safetensors or FILE.pt")
  p.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16"])
  a = p.parse_args(argv)
  yaml_path, step = export_checkpoint(a.workdir, a.out, a.step, a.ema, a.dtype)
  print(f"wrote {a.out} and {yaml_path} (step {step}, {'EMA' if a.ema else 'raw'} parameters)")
  return 0
