"""What the training loop trains: a task behind one small protocol.

The loop (`train/loop.py`) owns everything that is the same for every run — mesh, state,
jitted step, accumulation, NaN guard, checkpoints, preemption, reporting. A task says what is
trained and on what:

  frozen(mesh)          -> (frozen inputs, their shardings): perceptual nets, teachers, constants
  params_init(rng)      -> the boxed parameter tree (logical axes for sharding)
  loss_fn()             -> loss_fn(params, frozen, batch, rng, key) -> (loss, metrics)
  iterators()           -> {name: iterator of process-local host batches (get/set_state)}: an
                           `atoken_jax.batch.Batch`, or a pytree holding one; the loop sends
                           `batch.for_device(b)` (no host-only fields) to the step
  schedule()            -> [MicroTask]: which iterator, how many micro-batches, static loss key
  work(m, b)            -> Work of one micro-batch (tokens, model FLOPs, attention pairs)
  initialize(loop, s)   -> a fresh run's state s initialised from elsewhere (previous stage...)
  hooks()               -> [Hook]: pictures, evaluation, end-of-run reports

Two implementations: the tokenizer's curriculum stages (`train/tokenizer_task.py`) and the
Gaussian decoder, alone or joint (`gs3d/task.py`). The loop calls `frozen` once, first (a task
may load there what its parameters' shapes depend on), then `params_init` and `loss_fn`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable, Mapping, Protocol

import ml_collections


@dataclasses.dataclass(frozen=True)
class MicroTask:
  """One entry of the round-robin: `accum` micro-batches from iterator `name` per optimiser
  step, each compiled for its batch shapes and the static loss argument `key`. Its metrics are
  reported as `name/<metric>`, averaged over its micro-batches."""
  name: str
  accum: int
  key: Hashable = None
  shows_pictures: bool = False  # a picture hook may draw this micro-task's batches


@dataclasses.dataclass(frozen=True)
class Work:
  """What one micro-batch costs: real (non-padding) tokens, training FLOPs counted from the
  attention pairs the model needs, and attention pairs computed / needed."""
  tokens: float = 0.0
  flops: float = 0.0
  pairs_needed: float = 0.0
  pairs_computed: float = 0.0


@dataclasses.dataclass(frozen=True)
class Hook:
  """`fn(loop, step, state)` after every `every`-th optimiser step (0 = never) and, when
  `at_end`, once after the last step. Runs on every process (it may read sharded arrays
  through `sharding.to_host`); only process 0 should write files."""
  fn: Callable[[Any, int, Any], None]
  every: int = 0
  at_end: bool = False


class Task(Protocol):
  cfg: ml_collections.ConfigDict

  def params_init(self, rng) -> Any: ...
  def frozen(self, mesh) -> tuple[Any, Any]: ...
  def loss_fn(self) -> Callable: ...
  def iterators(self) -> Mapping[str, Any]: ...
  def schedule(self) -> list[MicroTask]: ...
  def work(self, micro: MicroTask, host: Any) -> Work: ...
  def initialize(self, loop, state) -> Any: ...
  def hooks(self) -> list[Hook]: ...
