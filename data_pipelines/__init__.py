"""Grain data pipelines: images, videos and 3D assets -> packed (t, x, y, z) token batches.

  cfg = default_task_config("image_recon", stage=1, preset="tiny")  # an ml_collections config
  it = build_task_iterator(cfg)        # per-process shard of the task's data
  batch = next(it)                     # atoken_jax.batch.Batch of numpy arrays [B, L, ...]
  state = it.get_state()               # JSON; or grain.checkpoint.CheckpointSave(it) in Orbax
  it.set_state(state)                  # the next batch is the one that would have come

See docs/data.md for the data flow, the batch keys and the source specs.
"""
from data_pipelines.bad_data import BadDataError
from data_pipelines.config import (
                                   MODALITY_IDS,
                                   TASK_IDS,
                                   TASKS,
                                   default_mixture_config,
                                   default_task_config,
)
from data_pipelines.default_data import ensure_default_dataset
from data_pipelines.mixing import MixedIterator, TaskSchedule, build_mixture
from data_pipelines.pipeline import TaskIterator, build_task_dataset, build_task_iterator

__all__ = ["BadDataError", "MODALITY_IDS", "TASK_IDS", "TASKS", "default_mixture_config",
           "default_task_config", "ensure_default_dataset", "MixedIterator", "TaskSchedule",
           "build_mixture", "TaskIterator", "build_task_dataset", "build_task_iterator"]
