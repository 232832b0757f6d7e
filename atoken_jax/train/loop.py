"""The one training loop, top to bottom: mesh -> input -> state -> step -> checkpoint -> loop.

    atoken train    --config=stage1_image:tiny --workdir=DIR [--config.x=v ...]
    atoken gs train --config=gs_decoder_alone:tiny --workdir=DIR

What is trained is a `task.Task` (the tokenizer's curriculum stages, or the Gaussian decoder);
everything else lives here, once. One optimiser step is a round-robin over the task's
micro-tasks, each with its own batch shapes and number of accumulated micro-batches; gradients
are summed on device and applied once. The loop resumes from the newest good checkpoint in the
workdir; on SIGTERM (or, on a pod, JAX's preemption sync point) it saves and raises `Preempted`.
Nothing in the step reads values back to the host; the previous step's non-finite verdict is
read one step late so the host never stalls on the device.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from atoken_jax import batch as batch_lib
from atoken_jax import sharding as sharding_lib
from atoken_jax.train import checkpoint as ckpt_lib
from atoken_jax.train import metrics as metrics_lib
from atoken_jax.train import resume as resume_lib
from atoken_jax.train import state as state_lib
from atoken_jax.train import step as step_lib
from atoken_jax.train.task import MicroTask, Task

log = logging.getLogger("atoken.train")


class Preempted(Exception):
  """A checkpoint of the step in `args[0]` was written because the job is being stopped."""


def global_batch(host, mesh):
  """A pytree of process-local rows (a `Batch`, or a dict holding one) -> the same tree of
  global arrays split over (data, fsdp) along the leading axis."""
  rows = np.shape(jax.tree.leaves(host)[0])[0] * jax.process_count()
  ways = mesh.shape["data"] * mesh.shape["fsdp"]
  if rows % ways:
    raise ValueError(f"a batch of {rows} rows cannot be split over data x fsdp = {ways} "
                     "devices: make the batch a multiple of it")
  return jax.tree.map(lambda v: jax.make_array_from_process_local_data(
      sharding_lib.batch_sharding(mesh, np.ndim(v)), np.asarray(v)), host)


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None):
  """The config's (data, fsdp, tensor) mesh; `num_devices: N` takes the first N devices."""
  kw = {k: v for k, v in mesh_cfg.items() if k != "num_devices"}
  if devices is None and mesh_cfg.get("num_devices", 0):
    devices = jax.devices()[:mesh_cfg.num_devices]
  return sharding_lib.make_mesh(**kw, devices=devices)


class Loop:
  """Holds everything a run needs; `run()` trains to cfg.total_steps.

  After a run: `last_report` (the newest reported scalars), `history` (every report)."""

  def __init__(self, task: Task, workdir: str, devices: Sequence[jax.Device] | None = None,
               allow_config_change: Sequence[str] = ()):
    cfg = task.cfg
    self.task, self.cfg, self.workdir = task, cfg, os.path.abspath(workdir)
    self.allow_config_change = tuple(allow_config_change)  # see train/resume.py
    os.makedirs(self.workdir, exist_ok=True)
    # ---------------------------------------------------------------- mesh
    self.mesh = make_mesh(cfg.mesh, devices)
    log.info("mesh: %s over %d devices in %d processes", dict(self.mesh.shape),
             self.mesh.size, jax.process_count())
    # ---------------------------------------------------------------- input
    self.iterators = dict(task.iterators())
    self.schedule: list[MicroTask] = list(task.schedule())
    # ---------------------------------------------------------------- frozen inputs + state
    frozen, frozen_shardings = task.frozen(self.mesh)
    self.frozen = jax.device_put(frozen, frozen_shardings)
    self.template = state_lib.StateTemplate(task.params_init, cfg.optim, cfg.total_steps,
                                            cfg.seed, self.mesh)
    self.abstract_state, self.state_shardings = (self.template.abstract_state,
                                                 self.template.shardings)
    # ---------------------------------------------------------------- step
    self.fns = step_lib.StepFns(
        task.loss_fn(), self.template.optimizer, self.state_shardings,
        lambda nd: sharding_lib.batch_sharding(self.mesh, nd), frozen_shardings)
    # ---------------------------------------------------------------- checkpoints
    self.checkpointer = ckpt_lib.Checkpointer(os.path.join(self.workdir, "checkpoints"),
                                              keep=cfg.keep, keep_every=cfg.keep_every or None,
                                              async_save=cfg.async_checkpoints)
    self.hooks = list(task.hooks())
    self.last_batches: dict[str, tuple[Any, Any]] = {}  # micro-task -> (host, device) batch
    self.last_report: dict[str, float] = {}
    self.history: list[dict[str, float]] = []
    self._stop = False
    self._saved_step = -1

  # ------------------------------------------------------------------ state
  def initial_state(self) -> state_lib.TrainState:
    """The newest good checkpoint in the workdir (refused if the config changes the model or
    the parameter layout, `resume.py`); else a fresh state, initialised as the task says
    (previous stage, SigLIP2, released weights)."""
    target = ckpt_lib.abstract_with_shardings(self.abstract_state, self.state_shardings)
    restored = resume_lib.restore_latest(self.checkpointer, target, self.iterators, self.cfg,
                                         self.allow_config_change)
    if restored is not None:
      self._saved_step, state = restored[0], restored[1]
      return state
    return self.task.initialize(self, self.template.init_sharded())

  def save(self, state, force: bool = False) -> None:
    step = int(sharding_lib.to_host(state.step))
    self.checkpointer.save(step, state, self.iterators, json.loads(self.cfg.to_json_best_effort()),
                           force=force)
    self._saved_step = step

  # ------------------------------------------------------------------ preemption
  def _on_sigterm(self, signum, frame):
    del signum, frame
    log.warning("SIGTERM: saving a checkpoint at the end of this step, then exiting")
    self._stop = True

  def _preempted(self, step: int) -> bool:
    if jax.process_count() > 1:  # every process must stop at the same step: JAX's sync point
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      return multihost_utils.reached_preemption_sync_point(step)
    return self._stop

  # ------------------------------------------------------------------ loop
  def run(self) -> state_lib.TrainState:
    # On a pod, JAX's preemption notifier owns SIGTERM (it agrees on one step for all
    # processes); a Python handler would replace it, so install ours only when alone.
    previous = (signal.signal(signal.SIGTERM, self._on_sigterm) if jax.process_count() == 1
                else None)
    self.writer = metrics_lib.Writer(self.workdir)
    try:
      state = self.initial_state()
      state = self._loop(state)
    finally:
      if previous is not None:
        signal.signal(signal.SIGTERM, previous)
      self.writer.close()
      self.checkpointer.wait()
    return state

  def _loop(self, state) -> state_lib.TrainState:
    cfg = self.cfg
    step = int(sharding_lib.to_host(state.step))
    peak = metrics_lib.peak_flops_per_device(cfg.get("peak_flops_per_device", 0.0))
    timer, work = metrics_lib.Timer(), _WorkSum()
    progress = _progress(cfg.total_steps, step)
    last_stats = None
    while step < cfg.total_steps:
      if self._preempted(step):
        if step != self._saved_step:  # this step's periodic save may have run already
          self.save(state, force=True)
        self.checkpointer.wait()
        log.warning("preempted: checkpoint at step %d written; exiting", step)
        raise Preempted(step)
      grads, task_metrics, micro = None, {}, 0
      for m in self.schedule:
        for _ in range(m.accum):
          t0 = time.perf_counter()
          host = next(self.iterators[m.name])
          timer.data(time.perf_counter() - t0)
          work.add(self.task.work(m, host))
          rng = jax.random.fold_in(jax.random.fold_in(state.rng, step), micro)
          device_batch = global_batch(batch_lib.for_device(host), self.mesh)
          grads, task_metrics[m.name] = self.fns.micro(
              grads, task_metrics.get(m.name), state.params, self.frozen, device_batch, rng,
              m.key)
          micro += 1
          if m.shows_pictures:
            self.last_batches[m.name] = (host, device_batch)
      state, stats = self.fns.update(state, grads, jnp.float32(micro))
      step += 1
      progress.update(1)
      if last_stats is not None:  # read the previous step's verdict: no stall on this one
        self._check_nonfinite(last_stats)
      last_stats = stats
      if step % cfg.log_every == 0 or step == cfg.total_steps:
        self._report(step, stats, task_metrics, timer, work, peak, progress)
        timer.reset()
        work = _WorkSum()
      for hook in self.hooks:
        if hook.every and step % hook.every == 0:
          hook.fn(self, step, state)
      if step % cfg.ckpt_every == 0 or step == cfg.total_steps:
        self.save(state)
    self._check_nonfinite(last_stats)
    progress.close()
    for hook in self.hooks:
      if hook.at_end:
        hook.fn(self, step, state)
    return state

  def _check_nonfinite(self, stats) -> None:
    if stats is None:
      return
    run = int(sharding_lib.to_host(stats["consecutive_skipped"]))
    if run >= self.cfg.max_consecutive_nonfinite:
      raise FloatingPointError(
          f"{run} optimiser steps in a row had a non-finite loss or gradient; none was applied. "
          "Lower the learning rate, check the data, or raise max_consecutive_nonfinite.")

  # ------------------------------------------------------------------ reporting
  def _report(self, step, stats, task_metrics, timer, work, peak, progress) -> None:
    stats, task_metrics = sharding_lib.to_host((stats, task_metrics))
    values = {f"train/{k}": float(v) for k, v in stats.items()}
    accum = {m.name: m.accum for m in self.schedule}
    for name, metrics in task_metrics.items():
      values.update({f"{name}/{k}": float(v) / accum[name] for k, v in metrics.items()})
    elapsed = max(timer.elapsed(), 1e-9)
    steps = step % self.cfg.log_every or self.cfg.log_every
    values["perf/steps_per_s"] = steps / elapsed
    values["perf/data_wait_fraction"] = timer.data_s / elapsed
    if work.tokens:
      values["perf/tokens_per_s"] = work.tokens / elapsed
    if work.flops:
      values["perf/flops_per_s"] = work.flops / elapsed
      if peak:
        values["perf/mfu"] = work.flops / elapsed / (peak * jax.device_count())
    if work.pairs_needed and work.pairs_computed:
      values["perf/attn_computed_over_needed"] = work.pairs_computed / work.pairs_needed
    values["train/lr"] = float(self.template.optimizer.schedule(step - 1))
    mem = metrics_lib.memory_in_use_bytes()
    if mem is not None:
      values["perf/memory_gib"] = mem / 2 ** 30
    self.writer.scalars(step, values)
    self.last_report = values
    self.history.append({"step": step, **values})
    losses = [v for k, v in values.items() if k.endswith("/loss")]
    postfix = {"loss": f"{sum(losses):.4f}", "skipped": int(stats["finite"] == 0)}
    if "perf/tokens_per_s" in values:
      postfix["tok_s"] = f"{values['perf/tokens_per_s']:.0f}"
    if "perf/attn_computed_over_needed" in values:
      postfix["attn_x"] = f"{values['perf/attn_computed_over_needed']:.2f}"
    progress.set_postfix(**postfix)
    if not math.isfinite(sum(losses)):
      log.warning("step %d: non-finite loss (the update was skipped)", step)


class _WorkSum:
  """Running sums of `task.Work` between reports."""

  def __init__(self):
    self.tokens = self.flops = self.pairs_needed = self.pairs_computed = 0.0

  def add(self, w) -> None:
    self.tokens += w.tokens
    self.flops += w.flops
    self.pairs_needed += w.pairs_needed
    self.pairs_computed += w.pairs_computed


def _progress(total: int, initial: int) -> Any:
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, initial=initial, desc="train", unit="step",
              disable=jax.process_index() != 0, dynamic_ncols=True)
