"""Frozen and initial weights of a Gaussian-decoder run: LPIPS and the tokenizer.

The tokenizer comes from an `atoken train` workdir (its newest or a given checkpoint, EMA or
raw parameters), from Apple's released weights + yaml, or - tiny preset only, with a warning -
from random weights. LPIPS comes from a file converted by tools/convert_lpips_weights.py, or
random weights for tiny runs.
"""
from __future__ import annotations

import logging
from typing import Any

from atoken_jax import config as config_lib

log = logging.getLogger("atoken.gs3d")


def _tiny_only(cfg, what: str) -> None:
  if cfg.preset != "tiny":
    raise ValueError(f"{what} is not set; random weights are for the tiny preset only")
  log.warning("%s is not set: using random weights (tiny preset only; the objective is then "
              "not the paper's)", what)


def load_lpips(cfg) -> dict:
  from atoken_jax import perceptual  # pylint: disable=import-outside-toplevel
  if not cfg.loss.lpips:
    return {}
  if cfg.loss.lpips_weights:
    return perceptual.load_lpips_params(cfg.loss.lpips_net, path=cfg.loss.lpips_weights)
  _tiny_only(cfg, "config.loss.lpips_weights")
  return perceptual.random_lpips_params(cfg.loss.lpips_net, cfg.seed)


def load_tokenizer(cfg) -> tuple[config_lib.ModelConfig, Any]:
  """-> (model config, AToken params) from cfg.tokenizer: an `atoken train` workdir, Apple's
  weights, or (tiny only) random weights."""
  t = cfg.tokenizer
  if t.workdir:
    from atoken_jax.train import restore  # pylint: disable=import-outside-toplevel
    run = restore.load_run(t.workdir, None if t.step < 0 else int(t.step), ema=t.use_ema)
    if run.is_gs:
      raise ValueError(f"config.tokenizer.workdir={t.workdir} is a Gaussian-decoder run, not a "
                       "tokenizer run")
    return run.model_cfg, run.params["model"]
  from atoken_jax.tokenizer import Tokenizer  # pylint: disable=import-outside-toplevel
  if t.ml_atoken:
    tok = Tokenizer.from_ml_atoken(t.ml_atoken, t.yaml)
  else:
    _tiny_only(cfg, "config.tokenizer.workdir / ml_atoken")
    tok = Tokenizer.init_random(t.preset, seed=cfg.seed + 7, latent_dim=int(t.latent_dim))
  return tok.cfg, tok.params
