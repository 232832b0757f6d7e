"""The `atoken` command line.

  atoken train    --config=experiments/stage1_image.py:tiny --workdir=DIR [--config.a.b=v ...]
  atoken sweep    --config=experiments/x.py[:arg] --workdir=ROOT [--launch]
  atoken export   --workdir=DIR [--step=N] [--ema] --format=ml-atoken --out=FILE.safetensors
  atoken tokenize FILE... (--checkpoint=WORKDIR|DIR [--step=N] [--ema] | --ml-atoken=W --yaml=Y)
  atoken data prepare SRC DST
  atoken eval     --config=experiments/eval_x.py[:arg] --checkpoint=WORKDIR|DIR|FILE [--ema]
  atoken gs       train|eval|export ...   (the 3D Gaussian decoder; docs/gs3d.md)

A refusal is one line on stderr, `atoken CMD: error: ...` (exit 2: wrong command line, 1: input
refused, 3: a bug). ATOKEN_DEBUG=1 or `atoken --debug CMD ...` shows tracebacks instead.
docs/what_happens_when.md says what happens on preemption, corrupt data, a full disk and more.
"""
from __future__ import annotations

import sys

from atoken_jax import cli_errors

USAGE = __doc__


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help"):
    print(USAGE)
    return 0
  debug = argv[1] == "--debug"
  if debug:
    argv = argv[:1] + argv[2:]
  command, rest = argv[1], argv[2:]
  prog = f"atoken {command}"
  sub = f"{prog} {rest[0]}" if command in ("data", "gs") and rest and rest[0][:1] != "-" else prog
  return cli_errors.run_command(sub, lambda: _dispatch(command, rest), debug=debug)


def _dispatch(command: str, rest: list[str]) -> int:
  if command == "train":
    from atoken_jax.train import launch  # pylint: disable=import-outside-toplevel
    return launch.train_main(rest)
  if command == "sweep":
    from atoken_jax.train import launch  # pylint: disable=import-outside-toplevel
    return launch.sweep_main(rest)
  if command == "export":
    from atoken_jax.train import export  # pylint: disable=import-outside-toplevel
    return export.main(rest)
  if command == "tokenize":
    from atoken_jax import tokenize_cli  # pylint: disable=import-outside-toplevel
    return tokenize_cli.main(rest)
  if command == "data":
    if not rest or rest[0] != "prepare":
      raise cli_errors.UsageError("usage: atoken data prepare SRC DST [options]")
    from data_pipelines import prepare  # pylint: disable=import-outside-toplevel
    return int(prepare.main(rest[1:]) or 0)
  if command == "gs":
    from atoken_jax.gs3d import cli as gs_cli  # pylint: disable=import-outside-toplevel
    return int(gs_cli.main(rest) or 0)
  if command == "eval":
    from atoken_jax.eval import cli as eval_cli  # pylint: disable=import-outside-toplevel
    return int(eval_cli.main(rest) or 0)
  raise cli_errors.UsageError(f"unknown command {command!r} (see atoken --help)")


if __name__ == "__main__":
  sys.exit(main())
