"""Training the Gaussian decoder, alone or jointly with the tokenizer's decoder.

    atoken gs train --config=experiments/gs_decoder_alone.py:tiny --workdir=DIR [--config.x=v]

One step: a batch of B assets (voxels + K views + cameras, `data.AssetBatches`) -> voxel
features (ground truth, or the tokenizer's reconstruction) -> Gaussian decoder -> K renders per
asset -> `objective.gs_loss`. The jitted step, the NaN-skipping AdamW + EMA update, the
optimiser and the Orbax checkpoints are the main trainer's (`train.step.StepFns`,
`train.optimizer.make_optimizer`, `train.checkpoint.Checkpointer`); parameters are sharded by the
same logical-axis rules, the batch over (data, fsdp).

Parameters: {"gs": Gaussian decoder} and, in joint mode, {"model": the AToken parameter groups
in cfg.tokenizer.trainable}. Frozen inputs: {"gs_constants", "lpips", "model": the rest of the
AToken parameters (all of them when a frozen tokenizer supplies the features)}.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from atoken_jax import config as config_lib
from atoken_jax import sharding as sharding_lib
from atoken_jax.gs3d import data as data_lib
from atoken_jax.gs3d import objective
from atoken_jax.gs3d import weights as weights_lib
from atoken_jax.model import atoken as atoken_model
from atoken_jax.model import gaussian_decoder as net_lib
from atoken_jax.model import gaussians
from atoken_jax.train import checkpoint as ckpt_lib
from atoken_jax.train import metrics as metrics_lib
from atoken_jax.train import objective as main_objective
from atoken_jax.train import optimizer as optimizer_lib
from atoken_jax.train import state as state_lib
from atoken_jax.train import step as step_lib

log = logging.getLogger("atoken.gs3d")
MODEL_CONFIG = "model_config.json"  # the tokenizer's ModelConfig, beside the checkpoints


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
  remat = bool(cfg.gs.remat)

  def loss_fn(params, frozen, batch, rng, terms=None):
    del terms
    extra = {}
    if not tokenizer:
      feats, coords, valid = batch["voxel_feats"], batch["voxel_coords"], batch["voxel_valid"]
    else:
      atoken = {**frozen["model"], **params.get("model", {})}
      out = model.apply({"params": atoken}, {k: batch[k] for k in atoken_model.INPUT_KEYS},
                        posterior=posterior, rngs={"posterior": rng})
      rec = out["reconstruction"] if joint else jax.lax.stop_gradient(out["reconstruction"])
      feats = rec[..., :config_lib.FRAME_PATCH_DIM]
      coords, valid = batch["coords"][..., 1:4], batch["sample_ids"] > 0
      if joint and rec_l1:  # the tokenizer's own 3D loss: L1 on the voxel features
        modality = jnp.where(valid, main_objective.VOXELS, -1)
        extra["rec_l1"], _ = main_objective.l1_per_patch(rec, batch["patches"], valid, modality)
      if joint and kl_w and model_cfg.quantizer is None:
        extra["kl"], _ = main_objective.kl_per_token(out["mean"], out["logvar"], valid)
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


class GSTemplate:
  """Configs, optimiser, abstract state and shardings of a run; `init_sharded()` makes a
  fresh state (Gaussian decoder as the release initialises it: out_layer zero)."""

  def __init__(self, cfg: ml_collections.ConfigDict, mesh, model_cfg=None):
    self.cfg, self.mesh = cfg, mesh
    self.gs_cfg = gs_config_from(cfg)
    self.model_cfg = model_cfg
    gs_net, n = net_lib.GaussianDecoderNet(self.gs_cfg), 8
    gs_init = lambda rng: gs_net.init(rng, jnp.zeros((1, n, self.gs_cfg.in_dim)),
                                      jnp.zeros((1, n, 3), jnp.int32), jnp.ones((1, n), bool))
    self.model_boxed = None
    if model_cfg is not None:
      dummy = atoken_model_dummy(model_cfg)
      self.model_boxed = jax.eval_shape(lambda: atoken_model.AToken(model_cfg).init(
          {"params": jax.random.PRNGKey(0)}, dummy, "mean")["params"])
    trainable = tuple(cfg.tokenizer.trainable) if cfg.mode == "joint" else ()

    def params_init(rng):
      p = dict(gs_init(rng)["params"])
      p["out_layer"] = jax.tree.map(jnp.zeros_like, p["out_layer"])
      out = {"gs": p}
      if trainable:
        part, _ = _split_model(self.model_boxed, trainable)
        out["model"] = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), part)
      return out

    plain = nn.meta.unbox(jax.eval_shape(params_init, jax.random.PRNGKey(0)))
    self.tx = optimizer_lib.make_optimizer(cfg.optim, plain, cfg.total_steps)

    def init():
      rng = jax.random.PRNGKey(cfg.seed)
      params = params_init(jax.random.fold_in(rng, 1))
      opt_state = state_lib.rebox_like(self.tx.init(nn.meta.unbox(params)), params)
      zero = jnp.zeros((), jnp.int32)
      return state_lib.TrainState(step=zero, params=params, opt_state=opt_state,
                                  ema_params=params, rng=jax.random.fold_in(rng, 2),
                                  skipped=zero, consecutive_skipped=zero)

    self.abstract_state, self.shardings = state_lib.state_shardings(init, mesh)
    self._init = jax.jit(lambda: nn.meta.unbox(init()), out_shardings=self.shardings)
    self.trainable = trainable

  def init_sharded(self) -> state_lib.TrainState:
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(sharding_lib.LOGICAL_AXIS_RULES):
      return self._init()

  def model_shardings(self):
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(self.model_boxed), self.mesh,
                                       sharding_lib.LOGICAL_AXIS_RULES)


def atoken_model_dummy(model_cfg):
  from atoken_jax.tokenizer import dummy_inputs  # pylint: disable=import-outside-toplevel
  return dummy_inputs(model_cfg, 1, 16, 1)


def gs_constants(gs_cfg) -> dict:
  return {"offset_perturbation": jnp.asarray(gaussians.offset_perturbation(
      gs_cfg.num_gaussians, gs_cfg.voxel_size))}


# ------------------------------------------------------------------ the trainer


class GSTrainer:
  """`run()` trains to cfg.total_steps, resuming from the newest checkpoint in `workdir`."""

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str,
               make_iterator: Callable[..., Any] | None = None,
               devices: list[jax.Device] | None = None):
    self.cfg, self.workdir = cfg, os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    mesh_kw = {k: v for k, v in cfg.mesh.items() if k != "num_devices"}
    if devices is None and cfg.mesh.get("num_devices", 0):
      devices = jax.devices()[:cfg.mesh.num_devices]
    self.mesh = sharding_lib.make_mesh(**mesh_kw, devices=devices)
    ways = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    if cfg.data.batch_size % ways:
      raise ValueError(f"data.batch_size={cfg.data.batch_size} is not a multiple of the mesh's "
                       f"data x fsdp = {ways} devices (or set mesh.num_devices)")
    tokenizer = uses_tokenizer(cfg)
    model_cfg, self._model_params = (weights_lib.load_tokenizer(cfg, self.mesh) if tokenizer
                                     else (None, None))
    if model_cfg is not None and cfg.tokenizer.get("remat"):
      model_cfg = model_cfg.replace(remat=cfg.tokenizer.remat)
    self.template = GSTemplate(cfg, self.mesh, model_cfg)
    if model_cfg is not None and jax.process_index() == 0:  # what `restore_run` rebuilds from
      with open(os.path.join(self.workdir, MODEL_CONFIG), "w") as f:
        json.dump(dataclasses.asdict(model_cfg), f, indent=2)
    self.gs_cfg, self.model_cfg = self.template.gs_cfg, model_cfg
    packed = cfg.gs.attention == "packed"
    features = "tokens" if tokenizer else "ground_truth"
    self.iterator = (make_iterator or self._default_iterator)(cfg, features, packed, self.gs_cfg)
    replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    frozen = {"gs_constants": gs_constants(self.gs_cfg), "lpips": weights_lib.load_lpips(cfg)}
    frozen_sh = jax.tree.map(lambda _: replicated, frozen)
    if tokenizer:
      _, rest = _split_model(self._model_params, self.template.trainable)
      frozen["model"] = rest
      frozen_sh["model"] = _split_model(self.template.model_shardings(),
                                        self.template.trainable)[1]
    self.frozen = jax.device_put(frozen, frozen_sh)
    self.fns = step_lib.StepFns(make_loss_fn(cfg, self.gs_cfg, model_cfg), self.template.tx,
                                cfg.optim.ema_decay, self.template.shardings,
                                lambda nd: sharding_lib.batch_sharding(self.mesh, nd),
                                self.template.abstract_state.params, frozen_sh)
    self.checkpointer = ckpt_lib.Checkpointer(os.path.join(self.workdir, "checkpoints"),
                                              keep=cfg.keep, keep_every=cfg.keep_every or None,
                                              async_save=cfg.async_checkpoints)
    self.history: list[dict[str, float]] = []
    self._stop = False

  @staticmethod
  def _default_iterator(cfg, features, packed, gs_cfg):
    return data_lib.AssetBatches(cfg.data, features=features, packed=packed, gs_cfg=gs_cfg,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())

  def initial_state(self) -> state_lib.TrainState:
    """The newest good checkpoint, else a fresh state (+ init weights / tokenizer groups)."""
    target = ckpt_lib.abstract_with_shardings(self.template.abstract_state,
                                              self.template.shardings)
    restored = self.checkpointer.restore(target, {"data": self.iterator})
    if restored is not None:
      log.info("resumed at step %d", restored[0])
      return restored[1]
    state = self.template.init_sharded()
    params = dict(state.params)
    if self.cfg.gs.init_weights:
      from atoken_jax.gaussian_decoder import GaussianDecoder  # pylint: disable=import-outside-toplevel
      g = GaussianDecoder.from_ml_atoken(self.cfg.gs.init_weights, self.cfg.gs.init_yaml or None)
      if g.cfg != self.gs_cfg:
        raise ValueError(f"gs.init_weights hold {g.cfg}, the run is configured for {self.gs_cfg}")
      params["gs"] = g.params
    if self.template.trainable:
      params["model"] = _split_model(self._model_params, self.template.trainable)[0]
    params = jax.device_put(params, self.template.shardings.params)
    return state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params))

  def _global_batch(self, host: dict) -> dict:
    rows = len(host["images"]) * jax.process_count()
    ways = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    if rows % ways:
      raise ValueError(f"data.batch_size={rows} is not a multiple of data x fsdp = {ways}")
    return {k: jax.make_array_from_process_local_data(
        sharding_lib.batch_sharding(self.mesh, np.ndim(v)), np.asarray(v))
            for k, v in host.items()}

  def save(self, state, force: bool = False) -> None:
    self.checkpointer.save(int(jax.device_get(state.step)), state, {"data": self.iterator},
                           json.loads(self.cfg.to_json_best_effort()), force=force)

  def run(self) -> state_lib.TrainState:
    previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    writer = metrics_lib.Writer(self.workdir)
    try:
      state = self._loop(self.initial_state(), writer)
    finally:
      signal.signal(signal.SIGTERM, previous)
      writer.close()
      self.checkpointer.wait()
    return state

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self._stop = True

  def _loop(self, state, writer) -> state_lib.TrainState:
    cfg, step = self.cfg, int(jax.device_get(state.step))
    timer, pending = metrics_lib.Timer(), None
    while step < cfg.total_steps:
      if self._stop:
        self.save(state, force=True)
        self.checkpointer.wait()
        log.warning("SIGTERM: checkpoint at step %d written; exiting", step)
        return state
      t0 = time.perf_counter()
      batch = self._global_batch(next(self.iterator))
      timer.data(time.perf_counter() - t0)
      rng = jax.random.fold_in(state.rng, step)
      grads, m = self.fns.micro(self.fns.zeros(), None, state.params, self.frozen, batch, rng,
                                None)
      state, stats = self.fns.update(state, grads, jnp.float32(1.0))
      if pending is not None:
        self._check_nonfinite(pending[1])
      pending, step = (m, stats), step + 1
      if step % cfg.log_every == 0 or step == cfg.total_steps:
        self._report(step, pending, timer, writer)
      if step % cfg.ckpt_every == 0 or step == cfg.total_steps:
        self.save(state)
    if pending is not None:
      self._check_nonfinite(pending[1])
    return state

  def _check_nonfinite(self, stats) -> None:
    run = int(jax.device_get(stats["consecutive_skipped"]))
    if run >= self.cfg.max_consecutive_nonfinite:
      raise FloatingPointError(f"{run} steps in a row had a non-finite loss or gradient")

  def _report(self, step, pending, timer, writer) -> None:
    m, stats = jax.device_get(pending)
    values = {f"gs/{k}": float(v) for k, v in m.items()}
    values.update({f"train/{k}": float(v) for k, v in stats.items()})
    values["perf/steps_per_s"] = self.cfg.log_every / max(timer.elapsed(), 1e-9)
    values["perf/data_wait_fraction"] = timer.data_s / max(timer.elapsed(), 1e-9)
    values["train/lr"] = float(optimizer_lib.schedule(self.cfg.optim, self.cfg.total_steps)(
        step - 1))
    if values.get("gs/lossy_tiles", 0) > 0:
      log.warning("step %d: renders dropped Gaussians (lossy_tiles > 0): raise "
                  "config.render.max_pairs", step)
    writer.scalars(step, values)
    self.history.append({"step": step, **values})
    log.info("step %d: loss %.4f (l1 %.4f)", step, values["gs/loss"], values["gs/l1"])
    timer.reset()


def restore_run(workdir: str, step: int | None = None, ema: bool = False) -> dict[str, Any]:
  """A GS run's checkpoint -> {"cfg", "step", "gs_cfg", "gs_params", "gs_constants",
  "model_cfg" (None without a tokenizer), "model_params" (the jointly trained AToken groups;
  {} otherwise)}, on one device (numpy)."""
  from atoken_jax.tokenizer import config_from_dict  # pylint: disable=import-outside-toplevel
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  if not ckpt.steps():
    raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints")
  cfg = ml_collections.ConfigDict(ckpt.restore_config(step))
  model_cfg = None
  if uses_tokenizer(cfg):
    with open(os.path.join(workdir, MODEL_CONFIG)) as f:
      model_cfg = config_from_dict(json.load(f))
  mesh = sharding_lib.make_mesh(data=1, devices=jax.devices()[:1])
  template = GSTemplate(cfg, mesh, model_cfg)
  got = ckpt.restore(ckpt_lib.abstract_with_shardings(template.abstract_state,
                                                      template.shardings), None, step)
  ckpt.close()
  if got is None:
    raise FileNotFoundError(f"no restorable checkpoint under {workdir}")
  params = jax.device_get(got[1].ema_params if ema else got[1].params)
  return {"cfg": cfg, "step": got[0], "gs_cfg": template.gs_cfg, "gs_params": params["gs"],
          "gs_constants": jax.device_get(gs_constants(template.gs_cfg)),
          "model_cfg": model_cfg, "model_params": params.get("model", {})}
