"""Reading a finished or running training workdir: `load_run`, the one way to restore a run.

  run = load_run("runs/stage1", ema=True)      # newest readable checkpoint
  run.step, run.config, run.model_cfg, run.params["model"]

Used by stage hand-offs, `atoken export`, `atoken eval` / `atoken tokenize` on a workdir, and
the 3D path (a tokenizer workdir, a Gaussian-decoder workdir). No train-state template is
needed: the parameters are read from the checkpoint's own metadata, so the optimiser state is
never loaded. Unreadable (garbage, truncated) checkpoints are skipped, and one log line says
which step was taken and why the newer ones were not. Nothing is created or written.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Mapping

import ml_collections

from atoken_jax import config as config_lib
from atoken_jax.train import checkpoint as ckpt_lib

log = logging.getLogger("atoken.restore")
MODEL_CONFIG = "model_config.json"  # a Gaussian-decoder run's tokenizer config, beside checkpoints


@dataclasses.dataclass(frozen=True)
class Run:
  """One restored checkpoint of a workdir.

  params: the saved `state.params`, or `state.ema_params` when `ema` - {"model": AToken params,
  "siglip": {...}} for tokenizer runs, {"gs": ..., ["model": trained AToken groups]} for
  Gaussian-decoder runs; numpy arrays unless restored onto shardings.
  model_cfg: the AToken config (a Gaussian-decoder run's tokenizer; None if it used none).
  skipped: [(step, why)] of newer checkpoints that could not be read.
  """
  workdir: str
  step: int
  config: ml_collections.ConfigDict
  params: dict
  ema: bool
  model_cfg: config_lib.ModelConfig | None
  skipped: tuple[tuple[int, str], ...] = ()

  @property
  def is_gs(self) -> bool:
    return "gs" in self.config


def is_workdir(path: str) -> bool:
  """A training workdir (has WORKDIR/checkpoints), as opposed to a `Tokenizer.save` directory."""
  return os.path.isdir(os.path.join(path, "checkpoints"))


def load_run(workdir: str, step: int | None = None, ema: bool = False,
             shardings: Mapping[str, Any] | None = None) -> Run:
  """The newest readable checkpoint of `workdir` (or exactly `step`).

  shardings: optional tree of jax.sharding.Sharding like the params: leaves at the same path
  are restored straight onto the mesh (multi-host safe); the rest are numpy arrays.
  Raises FileNotFoundError (no such workdir / no checkpoint / no such step) or ValueError (no
  checkpoint can be read, each step's reason named), with nothing written."""
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"{workdir}: no such workdir")
  if not is_workdir(workdir):
    raise FileNotFoundError(f"{workdir} is not a training workdir (it has no checkpoints/)")
  which = "ema_params" if ema else "params"

  def attempt(s):
    config = ckpt.read_config(s)
    layout = ckpt.read_layout(s)
    out = ckpt.restore_subtrees(s, (which,), layout,
                                {which: shardings} if shardings is not None else None)
    return config, out[which]

  with ckpt_lib.quiet_logs("absl", "asyncio"):  # each skipped step is reported once, below
    ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    try:
      got_step, (config, params), skipped = ckpt.newest(attempt, step)
    except ckpt_lib.UnreadableCheckpoint as e:
      raise ValueError(str(e)) from None
    finally:
      ckpt.manager.close()
  config = ml_collections.ConfigDict(config)
  run = Run(workdir, got_step, config, params, ema, _model_config(workdir, config),
            tuple(skipped))
  kind = "EMA" if ema else "raw"
  if skipped:
    log.warning("%s: using step %d (%s parameters); skipped %s", workdir, got_step, kind,
                ckpt_lib.describe_skipped(skipped))
  else:
    log.info("%s: using step %d (%s parameters)", workdir, got_step, kind)
  return run


def _model_config(workdir: str, config: ml_collections.ConfigDict
                  ) -> config_lib.ModelConfig | None:
  if "gs" not in config:
    from atoken_jax.train import tokenizer_state  # pylint: disable=import-outside-toplevel
    return tokenizer_state.model_config_from(config)
  path = os.path.join(workdir, MODEL_CONFIG)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return config_lib.model_config_from_dict(json.load(f))


def load_tokenizer(checkpoint: str, yaml_path: str = "", step: int | None = None,
                   ema: bool = False):
  """Any checkpoint form `atoken eval` / `atoken tokenize` accept -> `Tokenizer`:
    WORKDIR             an `atoken train` workdir (its newest readable checkpoint, or `step`;
                        raw parameters, or the EMA with `ema`)
    DIR                 from `Tokenizer.save` (config.json + model.safetensors)
    FILE.safetensors    ml-atoken weights (.safetensors or .pt, read weights-only), with
                        `yaml_path` (default: FILE.yaml beside it, as `atoken export` writes it)
    random:PRESET       a freshly initialised model (smoke tests; e.g. random:tiny)
  `step` and `ema` apply to a workdir only."""
  from atoken_jax.tokenizer import Tokenizer  # pylint: disable=import-outside-toplevel
  if checkpoint.startswith("random:"):
    return Tokenizer.init_random(checkpoint.split(":", 1)[1] or "tiny")
  if os.path.isdir(checkpoint):
    if os.path.isfile(os.path.join(checkpoint, "config.json")):
      return Tokenizer.load(checkpoint)
    if is_workdir(checkpoint):
      run = load_run(checkpoint, step, ema)
      if run.is_gs:
        raise ValueError(f"{checkpoint} is a Gaussian-decoder run; use `atoken gs eval`")
      return Tokenizer(run.model_cfg, run.params["model"])
    raise FileNotFoundError(f"{checkpoint} is neither a training workdir (no checkpoints/) nor "
                            "a Tokenizer.save directory (no config.json)")
  if os.path.isfile(checkpoint):
    beside = os.path.splitext(checkpoint)[0] + ".yaml"
    yaml_path = yaml_path or (beside if os.path.isfile(beside) else "")
    if not yaml_path:
      raise ValueError(f"{checkpoint}: an ml-atoken weight file needs --yaml (its architecture "
                       "config)")
    return Tokenizer.from_ml_atoken(checkpoint, yaml_path)
  raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
