"""The tokenizer's curriculum stages as a `task.Task` for the one training loop.

    atoken train --config=stage1_image:tiny --workdir=DIR [--config.x=v ...]

Parameters: {"model": AToken, "siglip": {"logit_scale", "logit_bias"}}. Frozen inputs: the
objective's networks (LPIPS, SigLIP2 teacher, text tower; `train/frozen.py`). One micro-task
per configured data task (image/video/3D x reconstruction/understanding), each with its own
batch shape and number of accumulated micro-batches. Hooks: original | reconstruction pictures
(`image_every`) and the configured evaluation (`eval_every`).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np

from atoken_jax import config_files
from atoken_jax import sharding as sharding_lib
from atoken_jax import tokens as tokens_lib
from atoken_jax.batch import Batch
from atoken_jax.model import atoken as atoken_model
from atoken_jax.train import config_check
from atoken_jax.train import frozen as frozen_lib
from atoken_jax.train import heldout
from atoken_jax.train import metrics as metrics_lib
from atoken_jax.train import objective
from atoken_jax.train import perceptual_inputs
from atoken_jax.train import stages
from atoken_jax.train.tokenizer_state import model_config_from, params_init_fn
from atoken_jax.train.task import Hook, MicroTask, Work

log = logging.getLogger("atoken.train")

def task_schedule(cfg: ml_collections.ConfigDict) -> list[MicroTask]:
  """One micro-task per data task with accum_steps > 0, in config order.

  A task named `<modality>_<recon|understand>` (e.g. `video_understand`) gets that modality and
  task unless its config sets `modality` / `task` explicitly."""
  from data_pipelines import config as data_config  # pylint: disable=import-outside-toplevel
  out = []
  for name, t in cfg.tasks.items():
    if t.accum_steps <= 0:
      continue
    kind = objective.TaskKind(*data_config.task_kind(name, t))
    out.append(MicroTask(name, int(t.accum_steps), kind,
                         shows_pictures=kind == objective.TaskKind("image", "reconstruction")))
  return out


def with_perceptual_canvas(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config with each scheduled task's data config told the perceptual canvas when its
  objective needs resize weights (`perceptual_inputs.data_canvas`): the data pipeline builds
  them into its batches."""
  out = cfg.copy_and_resolve_references()
  for micro in task_schedule(cfg):
    task = out.tasks[micro.name]
    with task.unlocked():
      task.data = perceptual_inputs.data_canvas(
          cfg.loss, task.get("data") or ml_collections.ConfigDict(), micro.key.modality)
  return out


def default_iterators(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """One Grain iterator per scheduled task, over this process's shard of its data (the task's
  data overrides merged onto config.data)."""
  from data_pipelines import build_task_iterator  # pylint: disable=import-outside-toplevel
  from data_pipelines import config as data_config  # pylint: disable=import-outside-toplevel
  return {name: build_task_iterator(data_config.resolve_task(cfg, name))
          for name, t in cfg.tasks.items() if t.accum_steps > 0}


class TokenizerTask:
  """The AToken tokenizer trained on its configured data tasks (curriculum stages 1-4)."""

  def __init__(self, cfg: ml_collections.ConfigDict,
               make_iterators: Callable[[ml_collections.ConfigDict], Mapping[str, Any]]
               | None = None):
    config_check.validate(cfg)
    self.cfg = cfg
    self.model_cfg = model_config_from(cfg)
    self._make_iterators = make_iterators or default_iterators
    self._frozen_spec = None
    self._reconstruct = None
    self._evaluator = None
    self.last_eval: dict[str, float] = {}

  def params_init(self, rng):
    return params_init_fn(self.cfg, self.model_cfg)(rng)

  def frozen(self, mesh):
    self._frozen_spec, frozen = frozen_lib.load(self.cfg, self.model_cfg, self.cfg.seed)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return frozen, jax.tree.map(lambda _: replicated, frozen)

  def loss_fn(self):
    return objective.make_loss_fn(self.model_cfg, self.cfg.loss, self._frozen_spec)

  def iterators(self):
    return self._make_iterators(with_perceptual_canvas(self.cfg))

  def schedule(self):
    return task_schedule(self.cfg)

  def work(self, micro: MicroTask, host: Batch) -> Work:
    del micro
    st = metrics_lib.batch_stats(host, self.model_cfg.attention_impl)
    return Work(tokens=st["tokens"], pairs_needed=st["attn_pairs"],
                pairs_computed=st["attn_pairs_computed"],
                flops=metrics_lib.train_flops(self.model_cfg, st["tokens"], st["attn_pairs"],
                                              host.patches.shape[-1]))

  def initialize(self, loop, state):
    """A fresh run starts from the previous stage, or SigLIP2, as configured."""
    init = self.cfg.init
    if init.previous_stage:
      return stages.restore_previous_stage(loop, state)
    if init.siglip2:
      return stages.load_siglip2(loop, state)
    return state

  def hooks(self) -> list[Hook]:
    hooks = []
    if self.cfg.image_every:
      hooks.append(Hook(self.log_picture, every=self.cfg.image_every))
    if self.cfg.eval_every:
      hooks.append(Hook(self.evaluate, every=self.cfg.eval_every))
    # held-out PSNR/SSIM next to PCA of equal latent size, when trained on the bundled data
    hooks.append(Hook(heldout.report_run, at_end=True))
    return hooks

  # ------------------------------------------------------------------ hooks
  def evaluate(self, loop, step, state) -> None:
    """The configured evaluation (`eval_config`) on the EMA parameters; scalars to TensorBoard,
    the report and pictures to WORKDIR/eval/<step> (written by process 0)."""
    from atoken_jax import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
    from atoken_jax.eval import runner  # pylint: disable=import-outside-toplevel
    if self._evaluator is None:
      self._evaluator = runner.Evaluator(config_files.load(self.cfg.eval_config, lock=False))
    params = sharding_lib.to_host(state.ema_params["model"])
    tok = tokenizer_lib.Tokenizer(self.model_cfg, params)
    out_dir = os.path.join(loop.workdir, "eval", str(step))
    report = self._evaluator(tok, output_dir=out_dir if jax.process_index() == 0 else None)
    scalars = {f"eval/{name}/{k}": v for name, task in report["tasks"].items()
               for k, v in task.get("metrics", {}).items() if isinstance(v, (int, float))}
    loop.writer.scalars(step, scalars)
    self.last_eval = scalars

  def log_picture(self, loop, step, state) -> None:
    """Original | reconstruction (posterior mean) of the first image slot, to TensorBoard.

    Every process runs the forward (it is one sharded computation); its first row comes back
    replicated, so no process reads another's shard, and process 0 (which fed global row 0)
    draws it."""
    if not loop.last_batches:
      return
    host, device_batch = next(iter(loop.last_batches.values()))
    if self._reconstruct is None:
      model = atoken_model.AToken(self.model_cfg)
      replicated = jax.sharding.NamedSharding(loop.mesh, jax.sharding.PartitionSpec())
      self._reconstruct = jax.jit(
          lambda p, b: model.apply({"params": p}, b, "mean")["reconstruction"][0],
          out_shardings=replicated)
    rec = sharding_lib.to_host(self._reconstruct(state.params["model"],
                                                 device_batch.for_model()))
    mask = host.sample_ids[0] == 1
    if jax.process_index() != 0 or not mask.any():
      return
    coords = host.coords[0][mask]
    grid = (1, int(coords[:, 1].max()) + 1, int(coords[:, 2].max()) + 1)
    seq = tokens_lib.TokenSeq(tokens_lib.full_width(host.patches[0][mask]), coords, "image", 1,
                              grid)
    pair = [tokens_lib.tokens_to_pixels(x, seq)
            for x in (seq.patches, tokens_lib.full_width(rec[mask]))]
    loop.writer.image(step, "reconstruction/image_recon",
                      (np.concatenate(pair, 1) + 1.0) / 2.0)
