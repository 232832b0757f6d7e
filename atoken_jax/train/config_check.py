"""Validation of a training config: a bad value fails with one line naming the field."""
from __future__ import annotations

import ml_collections

from atoken_jax import config as config_lib


class ConfigError(ValueError):
  pass


def _get(cfg, path: str):
  node = cfg
  for part in path.split("."):
    if part not in node:
      raise ConfigError(f"config.{path}: missing")
    node = node[part]
  return node


def _check(cfg, path: str, ok, what: str) -> None:
  value = _get(cfg, path)
  try:
    good = ok(value)
  except TypeError:
    good = False
  if not good:
    raise ConfigError(f"config.{path}: {what}, got {value!r}")


def validate(cfg: ml_collections.ConfigDict) -> None:
  pos_int = lambda v: isinstance(v, int) and v > 0
  nonneg = lambda v: v >= 0
  _check(cfg, "total_steps", pos_int, "must be a positive integer")
  _check(cfg, "log_every", pos_int, "must be a positive integer")
  _check(cfg, "ckpt_every", pos_int, "must be a positive integer")
  _check(cfg, "keep", pos_int, "must be a positive integer")
  _check(cfg, "keep_every", lambda v: isinstance(v, int) and v >= 0, "must be >= 0 (0 = off)")
  _check(cfg, "image_every", lambda v: isinstance(v, int) and v >= 0, "must be >= 0 (0 = off)")
  _check(cfg, "eval_every", lambda v: isinstance(v, int) and v >= 0, "must be >= 0 (0 = off)")
  if cfg.eval_every and not cfg.eval_config:
    raise ConfigError("config.eval_config: set an eval config (e.g. "
                      "'experiments/eval_paper.py:image') when eval_every > 0")
  _check(cfg, "max_consecutive_nonfinite", pos_int, "must be a positive integer")
  try:  # the model section is ModelConfig's own fields: it validates them
    config_lib.model_config_from_dict(_get(cfg, "model").to_dict())
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.model: {e}") from None
  for axis in ("data", "fsdp", "tensor"):
    _check(cfg, f"mesh.{axis}", lambda v: isinstance(v, int) and (v == -1 or v > 0),
           "must be a positive integer or -1")
  _check(cfg, "distributed.mode", lambda v: v in ("none", "auto", "explicit"),
         "must be 'none', 'auto' or 'explicit'")
  for name in ("lr", "end_lr", "weight_decay", "clip_norm", "encoder_lr_mult", "eps"):
    _check(cfg, f"optim.{name}", nonneg, "must be >= 0")
  _check(cfg, "optim.warmup_steps", lambda v: isinstance(v, int) and v >= 0,
         "must be an integer >= 0")
  for name in ("b1", "b2"):
    _check(cfg, f"optim.{name}", lambda v: 0 <= v < 1, "must lie in [0, 1)")
  _check(cfg, "optim.ema_decay", lambda v: 0 <= v <= 1, "must lie in [0, 1]")
  for name, value in cfg.loss.items():
    if isinstance(value, (int, float)) and not name.startswith("siglip_"):
      _check(cfg, f"loss.{name}", nonneg, "must be >= 0")
  tasks = _get(cfg, "tasks")
  if not tasks:
    raise ConfigError("config.tasks: at least one task is needed")
  for name in tasks:
    _check(cfg, f"tasks.{name}.accum_steps", lambda v: isinstance(v, int) and v >= 0,
           "must be an integer >= 0")
  if not any(t.accum_steps > 0 for t in tasks.values()):
    raise ConfigError("config.tasks: every task has accum_steps = 0; nothing would train")
  _check_data(cfg, tasks)


def _check_data(cfg: ml_collections.ConfigDict, tasks: ml_collections.ConfigDict) -> None:
  """Every task's data resolves (its overrides name fields config.data has) and its attention
  block table covers the decoder's KV cache."""
  from data_pipelines import config as data_config  # pylint: disable=import-outside-toplevel
  cache = cfg.model.get("decoder_kv_cache_frames", 0)
  for name, t in tasks.items():
    if not data_config.has_data(cfg, name):
      continue
    try:
      data = data_config.resolve_task(cfg, name)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    if data.get("kv_cache_frames", 0) != cache:
      field = ("data.kv_cache_frames" if "data" in cfg and "kv_cache_frames" not in t.data
               else f"tasks.{name}.data.kv_cache_frames")
      raise ConfigError(f"config.{field} = {data.get('kv_cache_frames', 0)} (task {name}) must "
                        f"equal model.decoder_kv_cache_frames = {cache}: the attention block "
                        "table must cover the decoder's KV cache")
