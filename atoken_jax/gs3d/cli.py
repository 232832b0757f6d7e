"""`atoken gs`: train, evaluate and export the 3D Gaussian decoder.

  atoken gs train  --config=experiments/gs_decoder_alone.py:tiny --workdir=DIR [--config.x=v]
                   [--allow_config_change=FIELD,...]
  atoken gs eval   (--workdir=DIR [--step=N] [--ema] | --gs-weights=F [--gs-yaml=Y])
                   --data=SPEC [--data=SPEC ...] [--features=ground_truth|tokenizer]
                   [--tokenizer-workdir=D | --ml-atoken=W --yaml=Y] [--size=N]
                   [--max-assets=N] (--lpips-weights=F | --random-lpips | --no-lpips)
                   [--lpips-net=vgg] [--no-quantize] [--out=report.json]
  atoken gs export --workdir=DIR [--step=N] [--ema] --out=FILE.safetensors
                   [--tokenizer-out=TOK.safetensors]

`eval` with --features=tokenizer and a joint run's --workdir uses that run's tokenizer (its
trained groups merged into the tokenizer it started from). `export` writes the Gaussian decoder
in ml-atoken's 3d_decode_gs layout (+ FILE.yaml); for joint runs --tokenizer-out also writes
the tokenizer with its trained groups (+ TOK.yaml).
"""
from __future__ import annotations

import json
import os
import sys

from atoken_jax import cli_errors

USAGE = __doc__


def main(argv: list[str] | None = None) -> int:
  """argv: the words after `atoken gs` (e.g. ["train", "--config=...", "--workdir=..."])."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(USAGE)
    return 0
  command, rest = argv[0], argv[1:]
  commands = {"train": train_main, "eval": eval_main, "export": export_main}
  if command not in commands:
    raise cli_errors.UsageError(f"unknown command {command!r} (train, eval or export)")
  return cli_errors.run_command(f"atoken gs {command}", lambda: commands[command](rest))


def train_main(argv: list[str]) -> int:
  from atoken_jax.gs3d import task  # pylint: disable=import-outside-toplevel
  from atoken_jax.train import launch  # pylint: disable=import-outside-toplevel
  cfg, args = launch.parse_run_args("atoken gs train", argv)
  return launch.run_loop(task.GSTask, cfg, args)


def _run_tokenizer(run: dict):
  """The tokenizer a run used (+ its jointly trained groups) as a `Tokenizer`."""
  from atoken_jax.gs3d import weights  # pylint: disable=import-outside-toplevel
  from atoken_jax.tokenizer import Tokenizer  # pylint: disable=import-outside-toplevel
  model_cfg, params = weights.load_tokenizer(run["cfg"])
  return Tokenizer(model_cfg, {**params, **run["model_params"]})


def _gaussian_decoder(a, run):
  from atoken_jax.gaussian_decoder import GaussianDecoder  # pylint: disable=import-outside-toplevel
  if run is not None:
    return GaussianDecoder(run["gs_cfg"], run["gs_params"], run["gs_constants"])
  if not a.gs_weights:
    raise ValueError("pass --workdir (a gs run) or --gs-weights")
  return GaussianDecoder.from_ml_atoken(a.gs_weights, a.gs_yaml)


def eval_main(argv: list[str]) -> int:
  p = cli_errors.ArgumentParser(prog="atoken gs eval", description="3D reconstruction metrics")
  p.add_argument("--workdir"), p.add_argument("--step", type=int)
  p.add_argument("--ema", action="store_true")
  p.add_argument("--gs-weights"), p.add_argument("--gs-yaml")
  p.add_argument("--data", action="append", required=True, help="source spec (repeatable)")
  p.add_argument("--features", default="ground_truth", choices=["ground_truth", "tokenizer"])
  p.add_argument("--tokenizer-workdir"), p.add_argument("--ml-atoken"), p.add_argument("--yaml")
  p.add_argument("--posterior", default="mean", choices=["mean", "sample"])
  p.add_argument("--size", type=int, default=0, help="0 = the stored views' size")
  p.add_argument("--max-assets", type=int, default=0)
  p.add_argument("--num-views", type=int, default=16, help="views rendered for mesh records")
  p.add_argument("--lpips-weights"), p.add_argument("--lpips-net", default="vgg")
  p.add_argument("--random-lpips", action="store_true", help="smoke runs only")
  p.add_argument("--no-lpips", action="store_true")
  p.add_argument("--no-quantize", action="store_true")
  p.add_argument("--out")
  a = p.parse_args(argv)
  from atoken_jax import perceptual  # pylint: disable=import-outside-toplevel
  from atoken_jax.gs3d import evaluate, task  # pylint: disable=import-outside-toplevel
  from atoken_jax.tokenizer import Tokenizer  # pylint: disable=import-outside-toplevel
  run = task.restore_run(a.workdir, a.step, a.ema) if a.workdir else None
  gdec = _gaussian_decoder(a, run)
  tokenizer = None
  if a.features == "tokenizer":
    if a.tokenizer_workdir or a.ml_atoken:
      from atoken_jax.gs3d import weights  # pylint: disable=import-outside-toplevel
      import ml_collections  # pylint: disable=import-outside-toplevel
      t = ml_collections.ConfigDict(dict(preset="so400m", seed=0, tokenizer=dict(
          workdir=a.tokenizer_workdir or "", step=-1, use_ema=True, ml_atoken=a.ml_atoken or "",
          yaml=a.yaml or "", preset="tiny", latent_dim=48)))
      tokenizer = Tokenizer(*weights.load_tokenizer(t))
    elif run is not None and run["model_cfg"] is not None:
      tokenizer = _run_tokenizer(run)
    else:
      raise ValueError("--features=tokenizer needs --tokenizer-workdir, --ml-atoken or a "
                       "--workdir whose run used a tokenizer")
  lpips_params = None
  if not a.no_lpips:
    if a.lpips_weights:
      lpips_params = perceptual.load_lpips_params(a.lpips_net, path=a.lpips_weights)
    elif a.random_lpips:
      lpips_params = perceptual.random_lpips_params(a.lpips_net)
    else:
      raise ValueError("pass --lpips-weights=FILE (tools/convert_lpips_weights.py), "
                       "--random-lpips (smoke runs) or --no-lpips")
  settings = task.settings_from(run["cfg"]) if run is not None else None
  kw = {"settings": settings} if settings is not None else {}
  report = evaluate.evaluate_sources(
      gdec, a.data, max_assets=a.max_assets, num_views=a.num_views, tokenizer=tokenizer,
      size=a.size or None, lpips_params=lpips_params, lpips_net=a.lpips_net,
      quantize=not a.no_quantize, posterior=a.posterior, **kw)
  summary = {k: v for k, v in report.items() if k != "per_asset"}
  print(json.dumps(summary, indent=2))
  if a.out:
    with open(a.out, "w") as f:
      json.dump({**report, "features": a.features, "lpips_net": a.lpips_net,
                 "random_lpips": bool(a.random_lpips)}, f, indent=2)
  return 0


def export_main(argv: list[str]) -> int:
  p = cli_errors.ArgumentParser(prog="atoken gs export", description="ml-atoken 3d_decode_gs files")
  p.add_argument("--workdir", required=True), p.add_argument("--step", type=int)
  p.add_argument("--ema", action="store_true")
  p.add_argument("--out", required=True, help="FILE.safetensors or FILE.pt (+ FILE.yaml)")
  p.add_argument("--tokenizer-out", help="joint runs: the tokenizer (+ its .yaml)")
  a = p.parse_args(argv)
  from atoken_jax.gs3d import task  # pylint: disable=import-outside-toplevel
  run = task.restore_run(a.workdir, a.step, a.ema)
  _gaussian_decoder(a, run).export_ml_atoken(a.out, yaml_path=os.path.splitext(a.out)[0] + ".yaml")
  print(f"wrote {a.out} (step {run['step']})")
  if a.tokenizer_out:
    if not run["model_params"]:
      raise ValueError("--tokenizer-out: this run did not train tokenizer parameters")
    import yaml  # pylint: disable=import-outside-toplevel
    from atoken_jax.interop import ml_atoken  # pylint: disable=import-outside-toplevel
    tok = _run_tokenizer(run)
    ml_atoken.save_ml_atoken(tok.params, tok.cfg, a.tokenizer_out)
    with open(os.path.splitext(a.tokenizer_out)[0] + ".yaml", "w") as f:
      yaml.safe_dump({"model": {"model_cfg": {"arch_cfg": ml_atoken.arch_cfg_from_config(
          tok.cfg)}}}, f, sort_keys=False)
    print(f"wrote {a.tokenizer_out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
