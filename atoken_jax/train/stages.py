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
from atoken_jax.train import restore as restore_lib

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


def restore_previous_stage(loop, state):
  init = loop.cfg.init
  run = restore_lib.load_run(init.previous_stage,
                             None if init.previous_step < 0 else init.previous_step,
                             ema=init.use_ema, shardings=loop.state_shardings.params)
  prev_cfg = run.model_cfg
  model_cfg = loop.task.model_cfg
  if prev_cfg.encoder != model_cfg.encoder or prev_cfg.decoder != model_cfg.decoder:
    raise ValueError(f"the previous stage {init.previous_stage} has encoder/decoder "
                     f"{prev_cfg.encoder} / {prev_cfg.decoder}, this run "
                     f"{model_cfg.encoder} / {model_cfg.decoder}")
  model = run.params["model"]
  if prev_cfg.scan_layers != model_cfg.scan_layers:
    model = (layer_stacking.stack_layers if model_cfg.scan_layers
             else layer_stacking.unstack_layers)(model)
  if prev_cfg.latent_dim != model_cfg.latent_dim:
    model = expand_latent(model, state.params["model"], prev_cfg.latent_dim,
                          model_cfg.latent_dim)
  params = {"model": model, "siglip": run.params["siglip"]}
  params = jax.device_put(params, loop.state_shardings.params)
  _append_lineage(loop.workdir, {
      "from_workdir": run.workdir, "from_step": int(run.step),
      "used_ema": bool(init.use_ema), "latent": [prev_cfg.latent_dim,
                                                 model_cfg.latent_dim],
      "quantizer": [prev_cfg.quantizer, model_cfg.quantizer]})
  log.info("initialised from %s step %d", init.previous_stage, run.step)
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

