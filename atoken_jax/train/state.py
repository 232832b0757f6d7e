"""The train state and its creation, already sharded, on a mesh."""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from atoken_jax import sharding as sharding_lib
from atoken_jax.train import optimizer as optimizer_lib


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; checkpointed as one pytree.

  params: the task's parameters (float32 masters), e.g. the tokenizer's {"model": AToken
    params, "siglip": {"logit_scale", "logit_bias"}} or the 3D task's {"gs": ..., "model": ...}.
  ema_params: EMA of params. rng: uint32[2] key data (checkpointable).
  skipped: steps whose loss or gradient was not finite (never applied);
  consecutive_skipped: the current run of them.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any
  rng: jax.Array
  skipped: jax.Array
  consecutive_skipped: jax.Array


def state_shardings(init_fn: Callable[[], TrainState], mesh: Mesh, rules=None):
  """-> (abstract unboxed state, its NamedShardings). Parameters, and the optimiser moments and
  EMA that mirror them, follow the logical-axis rules; everything else is replicated."""
  rules = sharding_lib.LOGICAL_AXIS_RULES if rules is None else rules
  boxed = jax.eval_shape(init_fn)
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
  return nn.meta.unbox(boxed), shardings


def make_init_fn(params_init: Callable[[jax.Array], Any], optimizer: optimizer_lib.AdamW,
                 seed: int):
  """A function () -> boxed TrainState (logical partitioning metadata kept for sharding).

  `params_init(rng)` returns the task's boxed parameter tree; the optimiser starts empty and
  the EMA equals the parameters."""
  def init() -> TrainState:
    rng = jax.random.PRNGKey(seed)
    params = params_init(jax.random.fold_in(rng, 1))
    opt_state = optimizer.init(nn.meta.unbox(params))
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, opt_state=rebox_like(opt_state, params),
                      ema_params=params, rng=jax.random.fold_in(rng, 2), skipped=zero,
                      consecutive_skipped=zero)
  return init


class StateTemplate:
  """What a task's parameters and optimiser config imply for the train state on `mesh`: the
  optimiser, the abstract (unboxed) state, its shardings, and `init_sharded()`, which creates a
  fresh state already sharded (no host copy of the full state ever exists)."""

  def __init__(self, params_init: Callable[[jax.Array], Any], optim_cfg, total_steps: int,
               seed: int, mesh: Mesh):
    plain = nn.meta.unbox(jax.eval_shape(params_init, jax.random.PRNGKey(0)))
    self.optimizer = optimizer_lib.AdamW(optim_cfg, plain, total_steps)
    init_fn = make_init_fn(params_init, self.optimizer, seed)
    self.mesh = mesh
    self.abstract_state, self.shardings = state_shardings(init_fn, mesh)
    self._init = jax.jit(lambda: nn.meta.unbox(init_fn()), out_shardings=self.shardings)

  def init_sharded(self) -> TrainState:
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(sharding_lib.LOGICAL_AXIS_RULES):
      return self._init()


def rebox_like(opt_state, boxed_params):
  """Give the optimiser's parameter-shaped leaves (Adam moments) the params' partitioning."""
  boxed_leaves = jax.tree.leaves(boxed_params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  plain_struct = jax.tree.structure(nn.meta.unbox(boxed_params))

  def rebox(sub):
    if jax.tree.structure(sub) == plain_struct:
      leaves = jax.tree.leaves(sub)
      return jax.tree.unflatten(plain_struct, [
          b.replace_boxed(v) if isinstance(b, nn.Partitioned) else v
          for b, v in zip(boxed_leaves, leaves)])
    return sub

  return jax.tree.map(rebox, opt_state, is_leaf=lambda x: jax.tree.structure(x) == plain_struct)
