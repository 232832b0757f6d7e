"""Task mixing: the trainer's round-robin schedule over per-task iterators, by ratio.

`TaskSchedule(ratios)` turns ratios such as {"image_recon": 22.2, "video_understand": 11.1,
"video_recon": 66.6} into integer weights (2 : 1 : 6 here) and a fixed cycle built by smooth
weighted round-robin, which spreads each task evenly over the cycle
(["video_recon", "video_recon", "image_recon", ...]); step k trains `schedule.task_at(k)`.
`MixedIterator` holds one `TaskIterator` per task and yields (task name, batch) in that order;
its state is the step plus every task's state, so it checkpoints like a single iterator.
"""
from __future__ import annotations

import fractions
import math
from typing import Mapping, Optional

import grain

from atoken_jax.batch import Batch
from data_pipelines.pipeline import TaskIterator


class TaskSchedule:
  """Deterministic task order: `task_at(step)` cycles with period sum(weights)."""

  def __init__(self, ratios: Mapping[str, float], max_denominator: int = 1000):
    items = [(name, float(r)) for name, r in ratios.items() if float(r) > 0]
    if not items:
      raise ValueError(f"need at least one positive ratio, got {dict(ratios)}")
    total = sum(r for _, r in items)
    fracs = [fractions.Fraction(r / total).limit_denominator(max_denominator) for _, r in items]
    lcm = math.lcm(*(f.denominator for f in fracs))
    ints = [max(1, int(f * lcm)) for f in fracs]
    gcd = math.gcd(*ints)
    self.weights = {name: w // gcd for (name, _), w in zip(items, ints)}
    self.cycle = self._smooth_round_robin(self.weights)

  @staticmethod
  def _smooth_round_robin(weights: dict[str, int]) -> list[str]:
    current = {name: 0 for name in weights}
    total, cycle = sum(weights.values()), []
    for _ in range(total):
      for name, w in weights.items():
        current[name] += w
      best = max(current, key=lambda n: (current[n], -list(weights).index(n)))
      current[best] -= total
      cycle.append(best)
    return cycle

  def task_at(self, step: int) -> str:
    return self.cycle[step % len(self.cycle)]


class MixedIterator(grain.DatasetIterator):
  """(task name, batch) pairs following a `TaskSchedule`; checkpointable as one iterator."""

  def __init__(self, iterators: Mapping[str, TaskIterator], schedule: TaskSchedule):
    super().__init__()
    missing = set(schedule.weights) - set(iterators)
    if missing:
      raise ValueError(f"no iterator for scheduled tasks {sorted(missing)}")
    self.iterators, self.schedule, self.step = dict(iterators), schedule, 0

  def __next__(self) -> tuple[str, Batch]:
    name = self.schedule.task_at(self.step)
    batch = next(self.iterators[name])
    self.step += 1
    return name, batch

  def get_state(self) -> dict:
    return {"step": self.step, "tasks": {n: it.get_state() for n, it in self.iterators.items()}}

  def set_state(self, state: dict) -> None:
    self.step = int(state["step"])
    for name, s in state["tasks"].items():
      self.iterators[name].set_state(s)

  def metrics(self) -> dict[str, float]:
    return {f"{name}/{k}": v for name, it in self.iterators.items()
            for k, v in it.metrics().items()}

  def close(self) -> None:
    for it in self.iterators.values():
      it.close()
    super().close()


def build_mixture(cfg, shard_index: Optional[int] = None,
                  shard_count: Optional[int] = None) -> MixedIterator:
  """A mixture config ({tasks, ratios}, `config.default_mixture_config`) -> MixedIterator.

  Only tasks with a positive ratio get an iterator; build others with `build_task_iterator`.
  """
  schedule = TaskSchedule(dict(cfg.ratios))
  iterators = {name: TaskIterator(cfg.tasks[name], shard_index, shard_count)
               for name in schedule.weights}
  return MixedIterator(iterators, schedule)
