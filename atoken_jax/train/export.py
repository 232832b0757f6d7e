"""`atoken export`: any training checkpoint -> an ml-atoken checkpoint (+ its YAML).

  atoken export --workdir DIR [--step N] [--ema] --format ml-atoken --out FILE.safetensors

The file holds exactly ml-atoken's tensor names and shapes (`load_state_dict(strict=True)`
works there); the YAML beside it (FILE.yaml) carries `model.model_cfg.arch_cfg`.
"""
from __future__ import annotations

import os

import jax
import ml_collections
import yaml

from atoken_jax import sharding as sharding_lib
from atoken_jax import cli_errors
from atoken_jax.interop import ml_atoken
from atoken_jax.train import checkpoint as ckpt_lib
from atoken_jax.train import tokenizer_state


def export_checkpoint(workdir: str, out: str, step: int | None = None, ema: bool = False,
                      dtype=None) -> str:
  """Writes `out` (+ `out` with a .yaml suffix); returns the YAML path."""
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  if not ckpt.steps():
    raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints")
  cfg = ml_collections.ConfigDict(ckpt.restore_config(step))
  mesh = sharding_lib.make_mesh(data=1, devices=jax.devices()[:1])
  template = tokenizer_state.state_template(cfg, mesh)
  target = ckpt_lib.abstract_with_shardings(template.abstract_state, template.shardings)
  got = ckpt.restore(target, None, step)
  ckpt.close()
  if got is None:
    raise FileNotFoundError(f"no restorable checkpoint under {workdir}")
  _, state, _ = got
  params = jax.device_get((state.ema_params if ema else state.params)["model"])
  ml_atoken.save_ml_atoken(params, template.model_cfg, out, dtype)
  yaml_path = os.path.splitext(out)[0] + ".yaml"
  with open(yaml_path, "w") as f:
    yaml.safe_dump({"model": {"model_cfg": {
        "arch_cfg": ml_atoken.arch_cfg_from_config(template.model_cfg)}}}, f, sort_keys=False)
  return yaml_path


def main(argv: list[str]) -> int:
  p = cli_errors.ArgumentParser(prog="atoken export", description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--step", type=int, default=None, help="default: the newest checkpoint")
  p.add_argument("--ema", action="store_true", help="export the EMA parameters")
  p.add_argument("--format", default="ml-atoken", choices=["ml-atoken"])
  p.add_argument("--out", required=True, help="FILE.safetensors or FILE.pt")
  p.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16"])
  a = p.parse_args(argv)
  yaml_path = export_checkpoint(a.workdir, a.out, a.step, a.ema, a.dtype)
  print(f"wrote {a.out} and {yaml_path}")
  return 0
