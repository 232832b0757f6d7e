"""`atoken eval`: run an eval config on a checkpoint; write report.json, report.md and pictures.

  atoken eval --config experiments/eval_paper.py[:ARG] --checkpoint CKPT [--yaml Y.yaml]
              [--out DIR] [--name NAME] [--no-progress] [--config.a.b=VALUE ...]

CKPT is one of:
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


def load_tokenizer(checkpoint: str, yaml_path: str = ""):
  """See the module docstring for the accepted forms."""
  from atoken_jax.tokenizer import Tokenizer  # pylint: disable=import-outside-toplevel
  if checkpoint.startswith("random:"):
    return Tokenizer.init_random(checkpoint.split(":", 1)[1] or "tiny")
  if os.path.isdir(checkpoint):
    if os.path.isfile(os.path.join(checkpoint, "config.json")):
      return Tokenizer.load(checkpoint)
    raise FileNotFoundError(
        f"{checkpoint} has no config.json: for a training workdir run `atoken export --workdir "
        f"{checkpoint} --out F.safetensors` first, then evaluate F.safetensors")
  if os.path.isfile(checkpoint):
    beside = os.path.splitext(checkpoint)[0] + ".yaml"
    yaml_path = yaml_path or (beside if os.path.isfile(beside) else "")
    if not yaml_path:
      raise ValueError("an ml-atoken weight file needs --yaml (its architecture config)")
    return Tokenizer.from_ml_atoken(checkpoint, yaml_path)
  raise FileNotFoundError(f"checkpoint not found: {checkpoint}")


def _parser() -> argparse.ArgumentParser:
  p = cli_errors.ArgumentParser(prog="atoken eval", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
  p.add_argument("--checkpoint", required=True, help="DIR, ml-atoken FILE or random:PRESET")
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
  tokenizer = load_tokenizer(args.checkpoint, args.yaml)
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
