"""`atoken train` and `atoken sweep`: ml_collections config files, absl flag conventions."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_FLAGS_DEFINED = False


def _define_flags():
  global _FLAGS_DEFINED
  if not _FLAGS_DEFINED:
    config_flags.DEFINE_config_file("config", None, "experiment config file[:arg]",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "output directory (checkpoints, events, lineage)")
    flags.DEFINE_bool("launch", False, "sweep: run the runs one after another here")
    flags.DEFINE_list("allow_config_change", [], "resume although these model fields differ "
                      "from the checkpoint's (e.g. model.dtype); see atoken_jax/train/resume.py")
    _FLAGS_DEFINED = True


def _train(_):
  from atoken_jax.train import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  cfg, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  if cfg is None or not workdir:
    raise app.UsageError("atoken train needs --config=FILE[:arg] and --workdir=DIR")
  if flags.FLAGS.verbosity <= 0:  # Orbax and Grain log every save and read at INFO
    absl_logging.set_verbosity(absl_logging.WARNING)
  trainer_lib.setup_distributed(cfg)
  try:
    trainer_lib.Trainer(cfg, workdir, allow_config_change=flags.FLAGS.allow_config_change).run()
  except trainer_lib.Preempted as e:
    logging.warning("stopped by SIGTERM after step %s; resume with the same command", e)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def train_main(argv: list[str]) -> int:
  _define_flags()
  app.run(_train, argv=argv)
  return 0


def sweep_runs(cfg) -> list[tuple[str, dict]]:
  """[(run name, flattened overrides)] from `cfg.sweep`, a list of override dicts."""
  runs = []
  for i, overrides in enumerate(cfg.sweep):
    overrides = dict(overrides)
    name = "_".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(overrides.items())) or str(i)
    runs.append((f"{i:03d}_{name}", overrides))
  return runs


def _sweep(_):
  cfg, root = flags.FLAGS.config, flags.FLAGS.workdir
  if cfg is None or not root:
    raise app.UsageError("atoken sweep needs --config=FILE[:arg] and --workdir=ROOT")
  runs = sweep_runs(cfg)
  if not runs:
    print("the config declares no sweep (config.sweep is empty)")
    return
  config_arg = next(a for a in sys.argv if a.startswith("--config="))
  for name, overrides in runs:
    cmd = [sys.executable, "-m", "atoken_jax.cli", "train", config_arg,
           f"--workdir={os.path.join(root, name)}"]
    cmd += [f"--config.{k}={json.dumps(v) if isinstance(v, str) else v}"
            for k, v in overrides.items()]
    print(" ".join(cmd))
    if flags.FLAGS.launch:
      subprocess.run(cmd, check=True)



def sweep_main(argv: list[str]) -> int:
  _define_flags()
  app.run(_sweep, argv=argv)
  return 0
