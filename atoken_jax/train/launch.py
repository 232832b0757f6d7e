"""`atoken train`, `atoken sweep` and `atoken gs train`: a config, a workdir, the one loop.

    atoken train --config=stage1_image:tiny --workdir=DIR [--config.x=v ...]
    atoken sweep --config=stage1_image:tiny --workdir=ROOT [--launch]

The config is read by `atoken_jax.config_files` (a path or a name, `--config.x=v` overrides),
the same way as every other command.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Sequence

from atoken_jax import cli_errors, config_files


def setup_logging() -> None:
  """INFO for our loggers; Orbax, Grain and absl log every save and read at INFO."""
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  for noisy in ("absl", "orbax", "grain", "jax"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def setup_distributed(cfg) -> None:
  """jax.distributed.initialize when configured (explicitly, or `auto` on TPU pods / SLURM)."""
  d = cfg.get("distributed")
  if d is None or d.mode == "none":
    return
  import jax  # pylint: disable=import-outside-toplevel
  if d.mode == "auto":
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(d.coordinator_address, num_processes=d.num_processes,
                               process_id=d.process_id,
                               local_device_ids=list(d.local_device_ids) or None)


def parse_run_args(prog: str, argv: Sequence[str], launch_flag: bool = False):
  """-> (config, argparse namespace with .workdir [and .launch])."""
  spec, overrides, rest = config_files.split_argv(argv)
  p = cli_errors.ArgumentParser(prog=prog)
  p.add_argument("--workdir", help="output directory (checkpoints, events)")
  p.add_argument("--allow_config_change", "--allow-config-change", default="",
                 help="comma-separated fields that may differ from the checkpoint's on resume "
                      "while the parameter layout stays the same (e.g. model.dtype); see "
                      "atoken_jax/train/resume.py")
  if launch_flag:
    p.add_argument("--launch", action="store_true", help="run the runs one after another here")
  args = p.parse_args(rest)  # an unknown flag is named first
  if not args.workdir:
    raise cli_errors.UsageError(f"{prog} needs --workdir=DIR")
  if spec is None:
    raise cli_errors.UsageError(f"{prog} needs --config=FILE.py[:arg] or --config=NAME[:arg]")
  return config_files.load(spec, overrides), args


def run_loop(make_task, cfg, args) -> int:
  """Trains `make_task(cfg)` in `args.workdir` with the one loop: 0 when done or preempted
  (resume with the same command). Refusals propagate to the CLI's one-line boundary
  (`cli_errors`)."""
  from atoken_jax.train import loop as loop_lib  # pylint: disable=import-outside-toplevel
  setup_logging()
  setup_distributed(cfg)
  try:
    allowed = tuple(f for f in args.allow_config_change.split(",") if f)
    loop_lib.Loop(make_task(cfg), args.workdir, allow_config_change=allowed).run()
  except loop_lib.Preempted as e:
    logging.warning("stopped by SIGTERM after step %s; resume with the same command", e)
  return 0


def train_main(argv: Sequence[str]) -> int:
  """`atoken train`; argv excludes the program name."""
  from atoken_jax.train import tokenizer_task  # pylint: disable=import-outside-toplevel
  cfg, args = parse_run_args("atoken train", argv)
  return run_loop(tokenizer_task.TokenizerTask, cfg, args)


def sweep_runs(cfg) -> list[tuple[str, dict]]:
  """[(run name, flattened overrides)] from `cfg.sweep`, a list of override dicts."""
  runs = []
  for i, overrides in enumerate(cfg.sweep):
    overrides = dict(overrides)
    name = "_".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(overrides.items())) or str(i)
    runs.append((f"{i:03d}_{name}", overrides))
  return runs


def sweep_main(argv: Sequence[str]) -> int:
  """`atoken sweep`: prints (or, with --launch, runs) one `atoken train` per cfg.sweep entry."""
  cfg, args = parse_run_args("atoken sweep", argv, launch_flag=True)
  runs = sweep_runs(cfg)
  if not runs:
    print("the config declares no sweep (config.sweep is empty)")
    return 0
  spec, overrides, _ = config_files.split_argv(argv)
  for name, run_overrides in runs:
    cmd = [sys.executable, "-m", "atoken_jax.cli", "train", f"--config={spec}", *overrides,
           f"--workdir={os.path.join(args.workdir, name)}"]
    cmd += [f"--config.{k}={json.dumps(v) if isinstance(v, str) else v}"
            for k, v in run_overrides.items()]
    print(" ".join(cmd))
    if args.launch:
      subprocess.run(cmd, check=True)
  return 0
