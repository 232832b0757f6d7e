"""The Gaussian decoder, alone or jointly with the tokenizer's decoder, as a `train.task.Task`.

    atoken gs train --config=gs_decoder_alone:tiny --workdir=DIR [--config.x=v]

One micro-batch: B assets (voxels + K views + cameras, `data.AssetBatches`) -> voxel features
(ground truth, or the tokenizer's reconstruction) -> Gaussian decoder -> K renders per asset ->
`objective.gs_loss`. Everything else — mesh, state, the NaN-skipping AdamW + EMA step,
checkpoints, preemption, reporting — is the one training loop's (`train/loop.py`).

Parameters: {"gs": Gaussian decoder} and, in joint mode, {"model": the AToken parameter groups
in cfg.tokenizer.trainable}. Frozen inputs: {"gs_constants", "lpips", "model": the rest of the
AToken parameters (all of them when a frozen tokenizer supplies the features)}.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from atoken_jax import config as config_lib
from atoken_jax import packing
from atoken_jax import sharding as sharding_lib
from atoken_jax.gs3d import data as data_lib
from atoken_jax.gs3d import objective
from atoken_jax.gs3d import weights as weights_lib
from atoken_jax.model import atoken as atoken_model
from atoken_jax.model import gaussian_decoder as net_lib
from atoken_jax.model import gaussians
from atoken_jax.train import objective as main_objective
from atoken_jax.train import restore as restore_lib
from atoken_jax.train.task import Hook, MicroTask, Work

log = logging.getLogger("atoken.gs3d")
MODEL_CONFIG = restore_lib.MODEL_CONFIG  # the tokenizer's ModelConfig, beside the checkpoints


# ------------------------------------------------------------------ config -> objects


def gs_config_from(cfg: ml_collections.ConfigDict) -> config_lib.GaussianDecoderConfig:
  over = {"num_gaussians": int(cfg.gs.num_gaussians)} if cfg.gs.num_gaussians else {}
  return config_lib.gaussian_decoder_config(cfg.gs.preset, **over)


def weights_from(cfg) -> objective.LossWeights:
  return objective.LossWeights(l1=cfg.loss.l1, lpips=cfg.loss.lpips, ssim=cfg.loss.ssim,
                               ssim_scales=int(cfg.loss.ssim_scales), lpips_net=cfg.loss.lpips_net)


def settings_from(cfg) -> objective.RenderSettings:
  r = cfg.render
  return objective.RenderSettings(
      filter_2d=float(r.filter_2d), mip=bool(r.mip), background=tuple(map(float, r.background)),
      near=float(r.near), far=float(r.far), max_pairs=int(r.max_pairs) or None,
      tile_capacity=int(r.tile_capacity) or None)


def validate(cfg) -> None:
  """The 3D run's choices, each checked once, with one line naming the field."""
  choices = {"mode": ("alone", "joint"), "gs.remat": ("none", "full"),
             "gs.attention": ("packed", "masked"), "tokenizer.remat": ("", "none", "full", "dots"),
             "tokenizer.posterior": ("mean", "sample")}
  for path, allowed in choices.items():
    value = cfg
    for part in path.split("."):
      value = value[part]
    if value not in allowed:
      raise ValueError(f"config.{path} must be one of {allowed}, got {value!r}")
  uses_tokenizer(cfg)


def uses_tokenizer(cfg) -> bool:
  if cfg.features not in ("ground_truth", "tokenizer"):
    raise ValueError(f"features must be 'ground_truth' or 'tokenizer', got {cfg.features!r}")
  if cfg.mode == "joint" and cfg.features != "tokenizer":
    raise ValueError("joint mode trains through the tokenizer: set features='tokenizer'")
  return cfg.features == "tokenizer"


# ------------------------------------------------------------------ the loss


def make_loss_fn(cfg, gs_cfg: config_lib.GaussianDecoderConfig,
                 model_cfg: config_lib.ModelConfig | None) -> Callable:
  """-> loss_fn(params, frozen, batch, rng, terms=None) -> (loss, metrics) for `StepFns`."""
  weights, settings = weights_from(cfg), settings_from(cfg)
  joint, tokenizer = cfg.mode == "joint", uses_tokenizer(cfg)
  model = atoken_model.AToken(model_cfg) if tokenizer else None
  posterior, rec_l1, kl_w = cfg.tokenizer.posterior, float(cfg.loss.rec_l1), float(cfg.loss.kl)
  remat = cfg.gs.remat == "full"

  def loss_fn(params, frozen, batch, rng, terms=None):
    del terms
    extra = {}
    if not tokenizer:
      feats, coords, valid = batch["voxel_feats"], batch["voxel_coords"], batch["voxel_valid"]
    else:
      atoken, tokens = {**frozen["model"], **params.get("model", {})}, batch["tokens"]
      out = model.apply({"params": atoken}, tokens, posterior=posterior,
                        rngs={"posterior": rng})
      rec = out["reconstruction"] if joint else jax.lax.stop_gradient(out["reconstruction"])
      feats = rec[..., :config_lib.FRAME_PATCH_DIM]
      coords, valid = tokens.coords[..., 1:4], tokens.sample_ids > 0
      if joint and rec_l1:  # the tokenizer's own 3D loss: L1 on the voxel features
        modality = jnp.where(valid, main_objective.VOXELS, -1)
        extra["rec_l1"] = main_objective.l1_loss(rec, tokens.patches, valid, modality)
      if joint and kl_w and model_cfg.quantizer is None:
        extra["kl"] = main_objective.kl_loss(out["mean"], out["logvar"], valid)
    loss, metrics = objective.gs_loss_from_features(params["gs"], frozen, feats, coords, valid,
                                                    batch, gs_cfg, weights, settings, remat)
    metrics = {("gs_loss" if k == "loss" else k): v for k, v in metrics.items()}
    if "rec_l1" in extra:
      loss = loss + rec_l1 * extra["rec_l1"]
    if "kl" in extra:
      loss = loss + kl_w * extra["kl"]
    metrics.update(extra, loss=loss)
    return loss, metrics

  return loss_fn


# ------------------------------------------------------------------ state


def _split_model(params: dict, trainable) -> tuple[dict, dict]:
  unknown = sorted(set(trainable) - set(params))
  if unknown:
    raise ValueError(f"tokenizer.trainable names {unknown}, not AToken parameter groups "
                     f"{sorted(params)}")
  return ({k: v for k, v in params.items() if k in trainable},
          {k: v for k, v in params.items() if k not in trainable})


def trainable_groups(cfg) -> tuple[str, ...]:
  return tuple(cfg.tokenizer.trainable) if cfg.mode == "joint" else ()


def abstract_model_params(model_cfg: config_lib.ModelConfig):
  """The tokenizer's boxed parameter shapes (logical axes kept), without allocating them."""
  return jax.eval_shape(lambda: atoken_model.AToken(model_cfg).init(
      {"params": jax.random.PRNGKey(0)}, packing.empty_batch(1, 16, 1), "mean")["params"])


def params_init_fn(cfg, gs_cfg: config_lib.GaussianDecoderConfig,
                   model_cfg: config_lib.ModelConfig | None) -> Callable[[jax.Array], Any]:
  """rng -> {"gs": the Gaussian decoder as the release initialises it (out_layer zero)} plus,
  in joint mode, {"model": the trainable tokenizer groups} (zeros here; `GSTask.initialize`
  puts the tokenizer's own values in)."""
  gs_net, n = net_lib.GaussianDecoderNet(gs_cfg), 8
  trainable = trainable_groups(cfg)
  model_boxed = abstract_model_params(model_cfg) if trainable else None

  def params_init(rng):
    p = dict(gs_net.init(rng, jnp.zeros((1, n, gs_cfg.in_dim)), jnp.zeros((1, n, 3), jnp.int32),
                         jnp.ones((1, n), bool))["params"])
    p["out_layer"] = jax.tree.map(jnp.zeros_like, p["out_layer"])
    out = {"gs": p}
    if trainable:
      part, _ = _split_model(model_boxed, trainable)
      out["model"] = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), part)
    return out
  return params_init


def gs_constants(gs_cfg) -> dict:
  return {"offset_perturbation": jnp.asarray(gaussians.offset_perturbation(
      gs_cfg.num_gaussians, gs_cfg.voxel_size))}


def default_iterator(cfg, features: str, packed: bool, gs_cfg):
  return data_lib.AssetBatches(cfg.data, features=features, packed=packed, gs_cfg=gs_cfg,
                               process_index=jax.process_index(),
                               process_count=jax.process_count())


# ------------------------------------------------------------------ the task


class GSTask:
  """The Gaussian decoder (and, in joint mode, tokenizer groups) on rendered 3D assets.

  Parameters: {"gs": Gaussian decoder} and, in joint mode, {"model": the AToken parameter groups
  in cfg.tokenizer.trainable}. Frozen inputs: {"gs_constants", "lpips", "model": the rest of
  the AToken parameters (all of them when a frozen tokenizer supplies the features)}."""

  def __init__(self, cfg: ml_collections.ConfigDict,
               make_iterator: Callable[..., Any] | None = None):
    validate(cfg)
    self.cfg = cfg
    self.gs_cfg = gs_config_from(cfg)
    self.uses_tokenizer = uses_tokenizer(cfg)
    self.trainable = trainable_groups(cfg)
    self._make_iterator = make_iterator or default_iterator
    self.model_cfg: config_lib.ModelConfig | None = None
    self._model_params = None

  def frozen(self, mesh):
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    frozen = {"gs_constants": gs_constants(self.gs_cfg), "lpips": weights_lib.load_lpips(self.cfg)}
    shardings = jax.tree.map(lambda _: replicated, frozen)
    if self.uses_tokenizer:
      model_cfg, self._model_params = weights_lib.load_tokenizer(self.cfg)
      if self.cfg.tokenizer.get("remat"):
        model_cfg = model_cfg.replace(remat=self.cfg.tokenizer.remat)
      self.model_cfg = model_cfg
      model_shardings = nn.logical_to_mesh_sharding(
          nn.get_partition_spec(abstract_model_params(model_cfg)), mesh,
          sharding_lib.LOGICAL_AXIS_RULES)
      frozen["model"] = _split_model(self._model_params, self.trainable)[1]
      shardings["model"] = _split_model(model_shardings, self.trainable)[1]
    return frozen, shardings

  def params_init(self, rng):
    return params_init_fn(self.cfg, self.gs_cfg, self.model_cfg)(rng)

  def loss_fn(self):
    return make_loss_fn(self.cfg, self.gs_cfg, self.model_cfg)

  def iterators(self):
    packed = self.cfg.gs.attention == "packed"
    features = "tokens" if self.uses_tokenizer else "ground_truth"
    return {"data": self._make_iterator(self.cfg, features, packed, self.gs_cfg)}

  def schedule(self):
    return [MicroTask("gs", 1)]

  def work(self, micro, host) -> Work:
    del micro
    valid = host["voxel_valid"] if "voxel_valid" in host else host["tokens"].sample_ids
    return Work(tokens=float(np.count_nonzero(valid)))

  def initialize(self, loop, state):
    """A fresh run: released Gaussian-decoder weights (gs.init_weights) and, in joint mode, the
    tokenizer's own values of its trainable groups. Records the tokenizer's ModelConfig beside
    the checkpoints (what `restore_run` rebuilds it from)."""
    if self.model_cfg is not None and jax.process_index() == 0:
      with open(os.path.join(loop.workdir, MODEL_CONFIG), "w") as f:
        json.dump(config_lib.model_config_to_dict(self.model_cfg), f, indent=2)
    params = dict(state.params)
    if self.cfg.gs.init_weights:
      from atoken_jax.gaussian_decoder import GaussianDecoder  # pylint: disable=import-outside-toplevel
      g = GaussianDecoder.from_ml_atoken(self.cfg.gs.init_weights, self.cfg.gs.init_yaml or None)
      if g.cfg != self.gs_cfg:
        raise ValueError(f"gs.init_weights hold {g.cfg}, the run is configured for {self.gs_cfg}")
      params["gs"] = g.params
    if self.trainable:
      params["model"] = _split_model(self._model_params, self.trainable)[0]
    params = jax.device_put(params, loop.state_shardings.params)
    return state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params))

  def hooks(self) -> list[Hook]:
    return [Hook(self._warn_lossy, every=self.cfg.log_every)]

  @staticmethod
  def _warn_lossy(loop, step, state) -> None:
    del state
    if loop.last_report.get("gs/lossy_tiles", 0) > 0:
      log.warning("step %d: renders dropped Gaussians (lossy_tiles > 0): raise "
                  "config.render.max_pairs", step)


def restore_run(workdir: str, step: int | None = None, ema: bool = False) -> dict[str, Any]:
  """A GS run's checkpoint (`restore.load_run`) -> {"cfg", "step", "gs_cfg", "gs_params",
  "gs_constants", "model_cfg" (None without a tokenizer), "model_params" (the jointly trained
  AToken groups; {} otherwise)}, on the host (numpy)."""
  run = restore_lib.load_run(workdir, step, ema)
  if not run.is_gs:
    raise ValueError(f"{workdir} is a tokenizer run, not a Gaussian-decoder run")
  gs_cfg = gs_config_from(run.config)
  return {"cfg": run.config, "step": run.step, "gs_cfg": gs_cfg, "gs_params": run.params["gs"],
          "gs_constants": jax.device_get(gs_constants(gs_cfg)), "model_cfg": run.model_cfg,
          "model_params": run.params.get("model", {})}
