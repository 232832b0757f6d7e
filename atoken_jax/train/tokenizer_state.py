"""The tokenizer's train state as its config implies it: ModelConfig, parameter init, template.

Shared by the tokenizer task (a fresh run), stage hand-offs, export and every restore of a
tokenizer run, so none of them needs the training loop.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from atoken_jax import config as config_lib
from atoken_jax import packing
from atoken_jax.model import atoken as atoken_model
from atoken_jax.train import state as state_lib


def model_config_from(cfg: ml_collections.ConfigDict) -> config_lib.ModelConfig:
  """The run's ModelConfig: `cfg.model` holds exactly its fields (`experiments/common.py`).

  Configs saved before that (a `preset` name plus a few fields) are read too."""
  fields = cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model)
  if "preset" in fields:  # the earlier layout
    fields = {**config_lib.model_config_to_dict(config_lib.model_config(fields.pop("preset"))),
              **fields}
  return config_lib.model_config_from_dict(fields)


def params_init_fn(cfg: ml_collections.ConfigDict,
                   model_cfg: config_lib.ModelConfig) -> Callable[[jax.Array], Any]:
  """rng -> the boxed parameters of a fresh tokenizer run."""
  model = atoken_model.AToken(model_cfg)
  dummy = packing.empty_batch(1, 16, 1)

  def params_init(rng):
    return {"model": model.init({"params": rng}, dummy, "mean")["params"],
            "siglip": {"logit_scale": jnp.asarray(cfg.loss.siglip_scale_init, "float32"),
                       "logit_bias": jnp.asarray(cfg.loss.siglip_bias_init, "float32")}}
  return params_init


def state_template(cfg: ml_collections.ConfigDict, mesh) -> state_lib.StateTemplate:
  """The train state a tokenizer config implies on `mesh` (for restoring its checkpoints);
  `.model_cfg` is its ModelConfig."""
  model_cfg = model_config_from(cfg)
  template = state_lib.StateTemplate(params_init_fn(cfg, model_cfg), cfg.optim, cfg.total_steps,
                                     cfg.seed, mesh)
  template.model_cfg = model_cfg
  return template
