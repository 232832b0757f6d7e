"""The train state and its creation, already sharded, on a mesh."""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from atoken_jax import sharding as sharding_lib


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; checkpointed as one pytree.

  params: {"model": AToken params, "siglip": {"logit_scale", "logit_bias"}} (float32 masters).
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


def make_init_fn(model_init: Callable[[jax.Array], Any], tx: optax.GradientTransformation,
                 siglip_scale_init: float, siglip_bias_init: float, seed: int):
  """A function () -> boxed TrainState (logical partitioning metadata kept for sharding)."""
  def init() -> TrainState:
    rng = jax.random.PRNGKey(seed)
    model_params = model_init(jax.random.fold_in(rng, 1))
    params = {"model": model_params,
              "siglip": {"logit_scale": jnp.asarray(siglip_scale_init, jnp.float32),
                         "logit_bias": jnp.asarray(siglip_bias_init, jnp.float32)}}
    plain = nn.meta.unbox(params)
    opt_state = tx.init(plain)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=rebox_like(opt_state, params),
                      ema_params=params, rng=jax.random.fold_in(rng, 2),
                      skipped=jnp.zeros((), jnp.int32),
                      consecutive_skipped=jnp.zeros((), jnp.int32))
  return init


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
