"""The jitted pieces of one optimiser step: micro-batch gradients (accumulated) and the update.

One optimiser step = a round-robin over the tasks, each contributing its configured number of
micro-batches (its own shapes, so its own compile); gradients are summed on device and averaged
over all micro-batches, then applied once. Nothing here reads values back to the host.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from atoken_jax.train import optimizer as optimizer_lib
from atoken_jax.train.state import TrainState

LossFn = Callable[..., tuple[jax.Array, dict]]  # (params, frozen, batch, rng, terms)


def _tree_add(a, b):
  return jax.tree.map(jnp.add, a, b)


def micro_step(loss_fn: LossFn, terms, grads_acc, metrics_acc, params, frozen, batch, rng):
  """grads_acc + d loss / d params, metrics_acc + metrics (sums; `update` averages). The first
  micro-batch of a step passes grads_acc=None: its gradients start the sum (no zero tree is
  written and added); each task's first passes metrics_acc=None."""
  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, frozen, batch, rng,
                                                                  terms)
  grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
  metrics = {k: v.astype(jnp.float32) for k, v in metrics.items()}
  if metrics_acc is not None:
    metrics = _tree_add(metrics_acc, metrics)
  return (grads if grads_acc is None else _tree_add(grads_acc, grads)), metrics


def update(opt: optimizer_lib.AdamW, state: TrainState, grads_sum, num_micro: jax.Array):
  """Averages the accumulated gradients and applies them, unless a value is not finite: then
  parameters, optimiser state and EMA stay as they were and the skip is counted."""
  params, opt_state, ema, finite, grad_norm = opt.apply(state.params, state.opt_state,
                                                        state.ema_params, grads_sum, num_micro)
  skipped = (~finite).astype(jnp.int32)
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
      skipped=state.skipped + skipped,
      consecutive_skipped=(state.consecutive_skipped + 1) * skipped)
  stats = {"grad_norm": grad_norm, "finite": finite.astype(jnp.float32),
           "param_norm": optax.global_norm(new_state.params),
           "consecutive_skipped": new_state.consecutive_skipped,
           "skipped_total": new_state.skipped}
  return new_state, stats


class StepFns:
  """The jitted functions with explicit NamedSharding in/out shardings and donation.

  micro(grads_acc, metrics_acc, params, frozen, batch, rng, terms) -> (grads_acc, metrics_acc)
    [compiled per task: its batch shapes and its static loss terms; the step's first
    micro-batch passes grads_acc=None, each task's first metrics_acc=None]
  update(state, grads_acc, num_micro) -> (state, stats)
  """

  def __init__(self, loss_fn: LossFn, opt: optimizer_lib.AdamW, state_shardings: TrainState,
               batch_sharding: Callable[[int], NamedSharding],
               frozen_shardings=None):
    self._loss_fn = loss_fn
    self._batch_sharding = batch_sharding
    mesh = jax.tree.leaves(state_shardings.params)[0].mesh
    self.replicated = NamedSharding(mesh, PartitionSpec())
    self.param_shardings = state_shardings.params
    self.frozen_shardings = frozen_shardings
    self._micro = {}
    self.update = jax.jit(
        lambda s, g, n: update(opt, s, g, n),
        in_shardings=(state_shardings, self.param_shardings, self.replicated),
        out_shardings=(state_shardings, self.replicated), donate_argnums=(0,))

  def micro(self, grads_acc, metrics_acc, params, frozen, batch, rng, terms):
    """The first call of a step passes grads_acc=None, each task's first metrics_acc=None.
    `batch`: a pytree of batch-sharded arrays (a `Batch`, or a dict holding one)."""
    first = grads_acc is None
    leaves, treedef = jax.tree.flatten(batch)
    key = (first, metrics_acc is None, terms, treedef) + tuple(v.shape for v in leaves)
    if key not in self._micro:
      batch_sh = jax.tree.map(lambda v: self._batch_sharding(v.ndim), batch)
      self._micro[key] = jax.jit(
          lambda g, m, p, f, b, r: micro_step(self._loss_fn, terms, g, m, p, f, b, r),
          in_shardings=(None if first else self.param_shardings,
                        None if metrics_acc is None else self.replicated,
                        self.param_shardings, self.frozen_shardings, batch_sh, self.replicated),
          out_shardings=(self.param_shardings, self.replicated),
          donate_argnums=() if first else (0,))
    return self._micro[key](grads_acc, metrics_acc, params, frozen, batch, rng)
