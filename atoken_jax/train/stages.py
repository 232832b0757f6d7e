"""Curriculum hand-offs: initialise a fresh run from SigLIP2 or from the previous stage.

What changes between stages, and how it is initialised (tested in tests/test_stages.py):
  * latent 32 -> 48 (stage 1 -> 2): `proj` keeps its 32 mean and 32 log-variance columns; the
    16 new columns of each come from this run's fresh initialisation (as at stage-1 start);
    the decoder's `input_layer` keeps its 32 rows and the 16 new rows start at zero, so the
    reconstruction is unchanged at the hand-off while every new weight gets gradient at once.
  * continuous -> FSQ (stage 3 -> 4): no parameter changes (FSQ has none); the decoder now
    receives the FSQ codes of the posterior mean.
  * everything else (encoder, head, decoder, SigLIP logit scale/bias) is copied.
The optimiser state starts fresh; the EMA starts from the handed-off parameters. The lineage
(previous workdir, step, config) is appended to WORKDIR/lineage.json.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp

from atoken_jax.interop import layer_stacking
from atoken_jax.train import checkpoint as ckpt_lib
from atoken_jax.train import tokenizer_state

log = logging.getLogger(__name__)


def expand_latent(prev: dict, fresh: dict, old_c: int, new_c: int) -> dict:
  """AToken params with latent `old_c` -> `new_c` (see the module docstring)."""
  if new_c < old_c:
    raise ValueError(f"cannot shrink the latent from {old_c} to {new_c} channels")
  out = jax.tree.map(lambda x: x, prev)
  pk, fk = prev["proj"]["kernel"], fresh["proj"]["kernel"]
  out["proj"] = {"kernel": jnp.concatenate(
      [pk[:, :old_c], fk[:, old_c:new_c], pk[:, old_c:], fk[:, new_c + old_c:]], axis=1)}
  dk = prev["decoder"]["input_layer"]["kernel"]
  out["decoder"] = dict(prev["decoder"])
  out["decoder"]["input_layer"] = {"kernel": jnp.concatenate(
      [dk, jnp.zeros((new_c - old_c, dk.shape[1]), dk.dtype)], axis=0)}
  return out


def _previous_trainer_state(loop, workdir: str, step: int | None):
  """Restores the previous stage's params (EMA or raw) onto this run's mesh."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  model_cfg = loop.task.model_cfg
  prev_ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  prev_cfg = ml_collections.ConfigDict(prev_ckpt.restore_config(step))
  prev_model_cfg = tokenizer_state.model_config_from(prev_cfg).replace(
      scan_layers=model_cfg.scan_layers)
  if prev_model_cfg.encoder != model_cfg.encoder or prev_model_cfg.decoder != model_cfg.decoder:
    raise ValueError("the previous stage's encoder/decoder shapes differ from this run's "
                     f"({prev_model_cfg.encoder} vs {model_cfg.encoder})")
  template = tokenizer_state.state_template(prev_cfg, loop.mesh)
  target = ckpt_lib.abstract_with_shardings(template.abstract_state, template.shardings)
  got = prev_ckpt.restore(target, None, step)
  if got is None:
    raise FileNotFoundError(f"no checkpoint in the previous stage's workdir {workdir}")
  prev_step, prev_state, _ = got
  prev_ckpt.close()
  return prev_step, prev_state, prev_model_cfg


def restore_previous_stage(loop, state):
  init = loop.cfg.init
  prev_step, prev_state, prev_cfg = _previous_trainer_state(
      loop, init.previous_stage, None if init.previous_step < 0 else init.previous_step)
  src = prev_state.ema_params if init.use_ema else prev_state.params
  model = src["model"]
  if prev_cfg.latent_dim != loop.task.model_cfg.latent_dim:
    model = expand_latent(model, state.params["model"], prev_cfg.latent_dim,
                          loop.task.model_cfg.latent_dim)
  params = {"model": model, "siglip": src["siglip"]}
  params = jax.device_put(params, loop.state_shardings.params)
  _append_lineage(loop.workdir, {
      "from_workdir": os.path.abspath(init.previous_stage), "from_step": int(prev_step),
      "used_ema": bool(init.use_ema), "latent": [prev_cfg.latent_dim,
                                                 loop.task.model_cfg.latent_dim],
      "quantizer": [prev_cfg.quantizer, loop.task.model_cfg.quantizer]})
  log.info("initialised from %s step %d", init.previous_stage, prev_step)
  return state.replace(params=params, ema_params=_copy(params))


def _copy(tree):
  """Distinct buffers for the EMA: the update donates params and EMA separately."""
  return jax.tree.map(jnp.copy, tree)


def load_siglip2(loop, state):
  """Copies SigLIP2's vision tower into the encoder and pooling head (stage-1 init)."""
  from atoken_jax.interop import siglip2  # pylint: disable=import-outside-toplevel
  vision, heads = siglip2.read_siglip2(loop.cfg.init.siglip2)
  trunk = siglip2.encoder_trunk_config(vision, heads)
  if trunk != loop.task.model_cfg.encoder:
    raise ValueError(f"SigLIP2 at {loop.cfg.init.siglip2} is {trunk}, but the model's "
                     f"encoder is {loop.task.model_cfg.encoder}")
  imported = siglip2.siglip2_to_encoder_params(vision, trunk)
  if loop.task.model_cfg.scan_layers:
    imported = layer_stacking.stack_layers(imported)
  model = dict(state.params["model"])
  model.update(jax.device_put(imported, {k: loop.state_shardings.params["model"][k]
                                         for k in imported}))
  params = {**state.params, "model": model}
  _append_lineage(loop.workdir, {"from_siglip2": os.path.abspath(loop.cfg.init.siglip2)})
  return state.replace(params=params, ema_params=_copy(params))


def _append_lineage(workdir: str, entry: dict[str, Any]) -> None:
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, "lineage.json")
  history = json.load(open(path)) if os.path.exists(path) else []
  history.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **entry})
  with open(path, "w") as f:
    json.dump(history, f, indent=2)

