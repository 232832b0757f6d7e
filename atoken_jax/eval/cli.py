"""`atoken eval`: run an eval config on a checkpoint; write report.json, report.md and pictures.

  atoken eval --config experiments/eval_paper.py[:ARG] --checkpoint CKPT [--yaml Y.yaml]
              [--step N] [--ema]
              [--out DIR] [--name NAME] [--no-progress] [--config.a.b=VALUE ...]

CKPT is one of:
  WORKDIR             an `atoken train` workdir: its newest readable checkpoint (or --step N),
                      raw parameters (or the EMA with --ema)
  DIR                 from `Tokenizer.save` (config.json + model.safetensors)
  FILE.safetensors    ml-atoken weights (.safetensors or .pt, read weights-only): Apple's
                      release or `atoken export`'s output, with --yaml (default: FILE.yaml
                      beside it, as `atoken export` writes it)
  random:PRESET       a freshly initialised model (smoke tests; e.g. random:tiny)

The config is a path or a name (`--config=eval_paper:image`); `--config.a.b=VALUE` overrides a
field, as for every command (`atoken_jax.config_files`), e.g.
--config.tasks.imagenet.data.limit=1000. Output goes to --out, else the config's
`output_dir`, else CKPT/eval (or ./eval for files). The markdown summary is also printed.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from atoken_jax import cli_errors, config_files
from atoken_jax.train import restore as restore_lib


load_tokenizer = restore_lib.load_tokenizer  # every checkpoint form; see the module doc


def _parser() -> argparse.ArgumentParser:
  p = cli_errors.ArgumentParser(prog="atoken eval", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
  p.add_argument("--checkpoint", required=True,
                 help="training WORKDIR, Tokenizer.save DIR, ml-atoken FILE or random:PRESET")
  p.add_argument("--step", type=int, default=None, help="WORKDIR: this step (default: newest)")
  p.add_argument("--ema", action="store_true", help="WORKDIR: the EMA parameters")
  p.add_argument("--yaml", default="", help="ml-atoken YAML config (with a weight FILE)")
  p.add_argument("--out", default="", help="output directory")
  p.add_argument("--name", default="", help="method name in the tables")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point; `argv` excludes the program name (as `atoken_jax.cli` passes it)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  cfg, rest = config_files.parse(argv)
  args = _parser().parse_args(rest)
  tokenizer = load_tokenizer(args.checkpoint, args.yaml, args.step, args.ema)
  ckpt = args.checkpoint
  out = args.out or cfg.get("output_dir", "") or (
      os.path.join(ckpt, "eval") if os.path.isdir(ckpt) else "eval")
  name = args.name or cfg.get("name", "") or os.path.basename(os.path.normpath(ckpt))
  from atoken_jax.eval import report as report_lib, runner  # pylint: disable=import-outside-toplevel
  result = runner.evaluate(tokenizer, cfg, output_dir=out, progress=not args.no_progress,
                           name=name, checkpoint=ckpt)
  print(report_lib.markdown(result))
  print(f"wrote {result['files']['json']}, {result['files']['markdown']} and "
        f"{len(result['files']['pictures'])} pictures under {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
