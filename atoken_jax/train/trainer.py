"""The training loop, top to bottom: setup -> mesh -> input -> model -> state -> step -> loop.

    atoken train --config=experiments/stage1_image.py:tiny --workdir=DIR [--config.x=v ...]

One optimiser step is a round-robin over the configured tasks (image/video/3D x reconstruction/
understanding), each with its own batch shape and number of accumulated micro-batches.
Resumes automatically from the newest good checkpoint in DIR; SIGTERM saves and exits 0.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from atoken_jax import config as config_lib
from atoken_jax import sharding as sharding_lib
from atoken_jax import tokens as tokens_lib
from atoken_jax.model import atoken as atoken_model
from atoken_jax.tokenizer import dummy_inputs
from atoken_jax.train import checkpoint as ckpt_lib
from atoken_jax.train import config_check
from atoken_jax.train import frozen as frozen_lib
from atoken_jax.train import heldout
from atoken_jax.train import metrics as metrics_lib
from atoken_jax.train import objective
from atoken_jax.train import optimizer as optimizer_lib
from atoken_jax.train import perceptual_inputs
from atoken_jax.train import stages
from atoken_jax.train import state as state_lib
from atoken_jax.train import step as step_lib

log = logging.getLogger("atoken.train")

DEVICE_KEYS = atoken_model.INPUT_KEYS + ("modality", "task", "text_ids", "has_text",
                                         "text_embedding", "image_rows", "image_cols",
                                         "image_valid")
Iterators = Mapping[str, Any]


class Preempted(Exception):
  pass


def model_config_from(cfg: ml_collections.ConfigDict) -> config_lib.ModelConfig:
  m = cfg.model
  return config_lib.model_config(
      m.preset, latent_dim=m.latent_dim, quantizer=m.quantizer or None,
      scan_layers=m.scan_layers, remat=m.remat, dtype=m.dtype,
      attention_kv_chunk=m.attention_kv_chunk, decoder_kv_cache_frames=m.decoder_kv_cache_frames)


def setup_distributed(cfg: ml_collections.ConfigDict) -> None:
  """jax.distributed.initialize when configured (explicitly, or `auto` on TPU pods / SLURM)."""
  d = cfg.distributed
  if d.mode == "none":
    return
  if d.mode == "auto":
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(d.coordinator_address, num_processes=d.num_processes,
                               process_id=d.process_id,
                               local_device_ids=list(d.local_device_ids) or None)


def global_batch(batch: Mapping[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Process-local rows -> global arrays split over (data, fsdp)."""
  rows = np.shape(batch["segment_ids"])[0] * jax.process_count()
  ways = mesh.shape["data"] * mesh.shape["fsdp"]
  if rows % ways:
    raise ValueError(f"a batch of {rows} rows cannot be split over data x fsdp = {ways} "
                     "devices: make each task's rows a multiple of it")
  return {k: jax.make_array_from_process_local_data(
      sharding_lib.batch_sharding(mesh, np.ndim(v)), np.asarray(v))
          for k, v in batch.items() if k in DEVICE_KEYS}


def task_schedule(cfg: ml_collections.ConfigDict) -> list[tuple[str, int, objective.Terms]]:
  """[(task name, micro-batches per optimiser step, its loss terms)] in round-robin order.

  A task named `<modality>_<recon|understand>` (e.g. `video_understand`) gets that modality and
  task unless its config sets `modality` / `task` explicitly."""
  out = []
  for name, t in cfg.tasks.items():
    if t.accum_steps <= 0:
      continue
    modality, _, kind = name.partition("_")
    modality = t.get("modality", modality)
    task = t.get("task", "understanding" if kind.startswith("understand") else "reconstruction")
    out.append((name, int(t.accum_steps), objective.terms_for(modality, task)))
  return out


def default_iterators(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """One Grain iterator per scheduled task, over this process's shard of its data."""
  from data_pipelines import build_task_iterator  # pylint: disable=import-outside-toplevel
  return {name: build_task_iterator(t.data) for name, t in cfg.tasks.items()
          if t.accum_steps > 0}


class StateTemplate:
  """What a config implies for the train state: model config, optimiser, the abstract state
  and its shardings on `mesh`, and a jitted initialiser that creates it already sharded."""

  def __init__(self, cfg: ml_collections.ConfigDict, mesh):
    self.model_cfg = model_config_from(cfg)
    model = atoken_model.AToken(self.model_cfg)
    dummy = dummy_inputs(self.model_cfg, 1, 16, 1)
    model_init = lambda rng: model.init({"params": rng}, dummy, "mean")["params"]
    plain = nn.meta.unbox(jax.eval_shape(lambda: {
        "model": model_init(jax.random.PRNGKey(0)),
        "siglip": {"logit_scale": 0.0, "logit_bias": 0.0}}))
    self.tx = optimizer_lib.make_optimizer(cfg.optim, plain, cfg.total_steps)
    init_fn = state_lib.make_init_fn(model_init, self.tx, cfg.loss.siglip_scale_init,
                                     cfg.loss.siglip_bias_init, cfg.seed)
    self.mesh = mesh
    self.abstract_state, self.shardings = state_lib.state_shardings(init_fn, mesh)
    self._init = jax.jit(lambda: nn.meta.unbox(init_fn()), out_shardings=self.shardings)

  def init_sharded(self) -> state_lib.TrainState:
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(sharding_lib.LOGICAL_AXIS_RULES):
      return self._init()


class Trainer:
  """Holds everything a run needs; `run()` trains to cfg.total_steps."""

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str,
               make_iterators: Callable[[ml_collections.ConfigDict], Iterators] | None = None,
               devices: list[jax.Device] | None = None):
    config_check.validate(cfg)
    self.cfg, self.workdir = cfg, os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    # ---------------------------------------------------------------- mesh
    self.mesh = sharding_lib.make_mesh(**cfg.mesh, devices=devices)
    log.info("mesh: %s over %d devices in %d processes", dict(self.mesh.shape),
             self.mesh.size, jax.process_count())
    # ---------------------------------------------------------------- input
    make_iterators = make_iterators or default_iterators
    self.iterators = dict(make_iterators(cfg))
    self.schedule = task_schedule(cfg)
    # ---------------------------------------------------------------- model + state
    t = StateTemplate(cfg, self.mesh)
    self.model_cfg, self.tx = t.model_cfg, t.tx
    self.abstract_state, self.state_shardings = t.abstract_state, t.shardings
    self._init_state = t.init_sharded
    # ---------------------------------------------------------------- step
    self.frozen_spec, frozen = frozen_lib.load(cfg, self.model_cfg, cfg.seed)
    replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    frozen_shardings = jax.tree.map(lambda _: replicated, frozen)
    self.frozen = jax.device_put(frozen, frozen_shardings)
    self.fns = step_lib.StepFns(
        objective.make_loss_fn(self.model_cfg, cfg.loss, self.frozen_spec), self.tx,
        cfg.optim.ema_decay, self.state_shardings,
        lambda nd: sharding_lib.batch_sharding(self.mesh, nd), self.abstract_state.params,
        frozen_shardings)
    self.checkpointer = ckpt_lib.Checkpointer(os.path.join(self.workdir, "checkpoints"),
                                              keep=cfg.keep, keep_every=cfg.keep_every or None,
                                              async_save=cfg.async_checkpoints)
    self._stop = False
    self.last_report: dict[str, float] = {}
    self._reconstruct = None
    self._evaluator = None
    self.last_eval: dict[str, float] = {}

  # ------------------------------------------------------------------ state
  def initial_state(self) -> state_lib.TrainState:
    """Newest good checkpoint in the workdir; else a fresh state, initialised from the
    previous stage or SigLIP2 as configured."""
    target = ckpt_lib.abstract_with_shardings(self.abstract_state, self.state_shardings)
    restored = self.checkpointer.restore(target, self.iterators)
    if restored is not None:
      step, state, _ = restored
      log.info("resumed from %s at step %d", self.checkpointer.directory, step)
      return state
    state = self._init_state()
    init = self.cfg.init
    if init.previous_stage:
      state = stages.restore_previous_stage(self, state)
    elif init.siglip2:
      state = stages.load_siglip2(self, state)
    return state

  # ------------------------------------------------------------------ loop
  def _on_sigterm(self, signum, frame):
    del signum, frame
    log.warning("SIGTERM: saving a checkpoint at the end of this step, then exiting")
    self._stop = True

  def _preempted(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      return self._stop or multihost_utils.reached_preemption_sync_point(step)
    return self._stop

  def save(self, state, force: bool = False) -> None:
    step = int(jax.device_get(state.step))
    self.checkpointer.save(step, state, self.iterators, json.loads(self.cfg.to_json_best_effort()),
                           force=force)

  def run(self) -> state_lib.TrainState:
    previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    writer = metrics_lib.Writer(self.workdir)
    try:
      state = self.initial_state()
      state = self._loop(state, writer)
      heldout.report_run(self, state, writer)  # cfg.heldout_report: held-out PSNR vs PCA
    finally:
      signal.signal(signal.SIGTERM, previous)
      writer.close()
      self.checkpointer.wait()
    return state

  def _loop(self, state, writer) -> state_lib.TrainState:
    cfg = self.cfg
    step = int(jax.device_get(state.step))
    peak = metrics_lib.peak_flops_per_device(cfg.peak_flops_per_device)
    timer = metrics_lib.Timer()
    tokens = flops = 0.0
    progress = _progress(cfg.total_steps, step)
    last_stats = picture_batch = None
    while step < cfg.total_steps:
      if self._preempted(step):
        self.save(state, force=True)
        self.checkpointer.wait()
        log.warning("preempted: checkpoint at step %d written; exiting", step)
        raise Preempted(step)
      grads, task_metrics, micro = self.fns.zeros(), {}, 0
      for task, accum, terms in self.schedule:
        for _ in range(accum):
          t0 = time.perf_counter()
          host = self._host_inputs(next(self.iterators[task]), terms)
          timer.data(time.perf_counter() - t0)
          st = metrics_lib.batch_stats(host)
          tokens += st["tokens"]
          flops += metrics_lib.train_flops(self.model_cfg, st["tokens"], st["attn_pairs"])
          rng = jax.random.fold_in(jax.random.fold_in(state.rng, step), micro)
          device_batch = global_batch(host, self.mesh)
          grads, task_metrics[task] = self.fns.micro(
              grads, task_metrics.get(task), state.params, self.frozen, device_batch, rng, terms)
          micro += 1
          if terms.images and terms.reconstruction:
            picture_batch = (host, device_batch)
      state, stats = self.fns.update(state, grads, jnp.float32(micro))
      step += 1
      progress.update(1)
      if last_stats is not None:  # read the previous step's verdict: no stall on this one
        self._check_nonfinite(last_stats)
      last_stats = stats
      pending = {"stats": stats, "tasks": task_metrics,
                 "accum": {name: n for name, n, _ in self.schedule}}
      if step % cfg.log_every == 0 or step == cfg.total_steps:
        self._report(step, pending, timer, tokens, flops, peak, writer, progress)
        tokens = flops = 0.0
        timer.reset()
      if cfg.eval_every and step % cfg.eval_every == 0:
        self._evaluate(step, state, writer)
      if cfg.image_every and step % cfg.image_every == 0 and picture_batch is not None:
        self._log_picture(step, state, picture_batch, writer)
      if step % cfg.ckpt_every == 0 or step == cfg.total_steps:
        self.save(state)
    self._check_nonfinite(last_stats)
    progress.close()
    return state

  def _host_inputs(self, batch: dict, terms: objective.Terms) -> dict:
    """Adds what the step needs that depends only on sample shapes (host side)."""
    spec, loss = self.frozen_spec, self.cfg.loss
    if terms.images and (spec.lpips_net or spec.teacher is not None):
      batch = {**batch, **perceptual_inputs.resize_weights(
          batch, loss.perceptual_size, loss.perceptual_max_side // config_lib.PATCH_HW)}
    return batch

  def _evaluate(self, step, state, writer) -> None:
    """The configured evaluation (`eval_config`) on the EMA parameters; scalars to TensorBoard,
    the report and pictures to WORKDIR/eval/<step>."""
    from atoken_jax import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
    from atoken_jax.eval import cli as eval_cli  # pylint: disable=import-outside-toplevel
    from atoken_jax.eval import runner  # pylint: disable=import-outside-toplevel
    if self._evaluator is None:
      self._evaluator = runner.Evaluator(eval_cli.load_config(self.cfg.eval_config))
    params = jax.device_get(state.ema_params["model"])
    tok = tokenizer_lib.Tokenizer(self.model_cfg, params)
    out_dir = os.path.join(self.workdir, "eval", str(step))
    report = self._evaluator(tok, output_dir=out_dir if jax.process_index() == 0 else None)
    scalars = {f"eval/{name}/{k}": v for name, task in report["tasks"].items()
               for k, v in task.get("metrics", {}).items() if isinstance(v, (int, float))}
    writer.scalars(step, scalars)
    self.last_eval = scalars

  def _log_picture(self, step, state, picture_batch, writer) -> None:
    """Original | reconstruction (posterior mean) of the first image slot, to TensorBoard."""
    host, device_batch = picture_batch
    if self._reconstruct is None:
      model = atoken_model.AToken(self.model_cfg)
      self._reconstruct = jax.jit(
          lambda p, b: model.apply({"params": p}, b, "mean")["reconstruction"])
    rec = np.asarray(jax.device_get(self._reconstruct(state.params["model"], device_batch)))
    mask = host["sample_ids"][0] == 1
    if not mask.any():
      return
    coords = host["coords"][0][mask]
    grid = (1, int(coords[:, 1].max()) + 1, int(coords[:, 2].max()) + 1)
    seq = tokens_lib.TokenSeq(host["patches"][0][mask], coords, "image", 1, grid)
    pair = [tokens_lib.tokens_to_pixels(x, seq) for x in (seq.patches, rec[0][mask])]
    writer.image(step, "reconstruction/image_recon", (np.concatenate(pair, 1) + 1.0) / 2.0)

  def _check_nonfinite(self, stats) -> None:
    if stats is None:
      return
    run = int(jax.device_get(stats["consecutive_skipped"]))
    if run >= self.cfg.max_consecutive_nonfinite:
      raise FloatingPointError(
          f"{run} optimiser steps in a row had a non-finite loss or gradient; none was applied. "
          "Lower the learning rate, check the data, or raise max_consecutive_nonfinite.")

  def _report(self, step, pending, timer, tokens, flops, peak, writer, progress) -> None:
    stats = jax.device_get(pending["stats"])
    values = {f"train/{k}": float(v) for k, v in stats.items()}
    for task, m in jax.device_get(pending["tasks"]).items():
      n = pending["accum"][task]
      values.update({f"{task}/{k}": float(v) / n for k, v in m.items()})
    elapsed = timer.elapsed()
    values["perf/tokens_per_s"] = tokens / elapsed
    values["perf/steps_per_s"] = self.cfg.log_every / elapsed if step else 0.0
    values["perf/data_wait_fraction"] = timer.data_s / elapsed
    values["perf/flops_per_s"] = flops / elapsed
    values["train/lr"] = float(optimizer_lib.schedule(self.cfg.optim, self.cfg.total_steps)(
        step - 1))
    if peak:
      values["perf/mfu"] = flops / elapsed / (peak * jax.device_count())
    mem = metrics_lib.memory_in_use_bytes()
    if mem is not None:
      values["perf/memory_gib"] = mem / 2 ** 30
    writer.scalars(step, values)
    self.last_report = values
    losses = [v for k, v in values.items() if k.endswith("/loss")]
    progress.set_postfix(loss=f"{sum(losses):.4f}", tok_s=f"{values['perf/tokens_per_s']:.0f}",
                         skipped=int(stats["finite"] == 0))
    if not math.isfinite(sum(losses)):
      log.warning("step %d: non-finite loss (the update was skipped)", step)


def _progress(total: int, initial: int):
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, initial=initial, desc="train", unit="step",
              disable=jax.process_index() != 0, dynamic_ncols=True)
