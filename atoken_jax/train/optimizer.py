"""AdamW with parameter groups, warm-up + cosine schedule, clipping, and the parameter EMA.

Paper §3.5: AdamW (0.9, 0.95), weight decay 0.1, 2k warm-up to 3e-4 then cosine to 3e-5, the
SigLIP2-initialised encoder (trunk and pooling head) at 0.1x the learning rate, EMA 0.9999.
No weight decay on norms, biases, position tables, the pooling probe and the SigLIP logit
scale/bias. Group membership is decided by parameter path in one place (`lr_multiplier`,
`decays`), so a reader can check it.

`make_optimizer` writes the update as an optax chain: that chain defines the optimiser state
(what checkpoints hold) and the arithmetic. `AdamW.apply` computes the same update, together
with the skip of a non-finite step and the EMA, as one elementwise function per parameter: the
chain followed by a tree-wide select made XLA (CPU) materialise every leaf's new moments and
parameters before selecting them (1.7 GiB of temporaries and 5x the time for a 182M-parameter
model, bench/RESULTS.md); per leaf, every new value is written once, in place.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

_NO_DECAY_LEAVES = {"bias", "scale", "probe", "embedding", "logit_scale", "logit_bias"}
_ENCODER_PREFIXES = (("model", "encoder"), ("model", "head"))


def _names(path) -> tuple[str, ...]:
  return tuple(getattr(k, "key", getattr(k, "name", str(k))) for k in path)


def decays(path) -> bool:
  """Weight decay applies to matrices only: not to norms, biases, tables, probe, logit terms."""
  names = _names(path)
  return names[-1] not in _NO_DECAY_LEAVES and "pos_embedder" not in names


def lr_multiplier(path, encoder_lr_mult: float) -> float:
  names = _names(path)
  return encoder_lr_mult if any(names[:len(p)] == p for p in _ENCODER_PREFIXES) else 1.0


def schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to `lr`, then cosine to `end_lr` at `total_steps`."""
  warmup = min(int(cfg.warmup_steps), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=cfg.end_lr)


def _scale_by_tree(multipliers: Any) -> optax.GradientTransformation:
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda m, u: u * jnp.asarray(m, u.dtype), multipliers, updates), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def groups(cfg: ml_collections.ConfigDict, params: Any) -> tuple[Any, Any]:
  """Per parameter: (weight decay applies: bool, learning-rate multiplier: float)."""
  decay_mask = jax.tree_util.tree_map_with_path(lambda p, _: decays(p), params)
  mults = jax.tree_util.tree_map_with_path(
      lambda p, _: lr_multiplier(p, cfg.encoder_lr_mult), params)
  return decay_mask, mults


def make_optimizer(cfg: ml_collections.ConfigDict, params: Any,
                   total_steps: int) -> optax.GradientTransformation:
  """cfg: lr, end_lr, warmup_steps, b1, b2, eps, weight_decay, encoder_lr_mult, clip_norm."""
  decay_mask, mults = groups(cfg, params)
  parts = []
  if cfg.clip_norm:
    parts.append(optax.clip_by_global_norm(cfg.clip_norm))
  parts += [
      optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
      optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
      optax.scale_by_learning_rate(schedule(cfg, total_steps)),
      _scale_by_tree(mults),
  ]
  return optax.chain(*parts)


def _state_index(opt_state: tuple, kind: type) -> int:
  found = [i for i, s in enumerate(opt_state) if isinstance(s, kind)]
  if len(found) != 1:
    raise ValueError(f"the optimiser state holds {len(found)} {kind.__name__}, expected 1")
  return found[0]


class AdamW:
  """The optimiser of every task: `init` is `make_optimizer`'s (same state tree), `apply` its
  update fused per parameter with the skip and the EMA (module docstring).

  cfg: `make_optimizer`'s fields plus ema_decay (ema <- decay * ema + (1 - decay) * params).
  """

  def __init__(self, cfg: ml_collections.ConfigDict, params: Any, total_steps: int):
    self.cfg = cfg
    self.chain = make_optimizer(cfg, params, total_steps)
    self.schedule = schedule(cfg, total_steps)
    self.decay_mask, self.lr_mults = groups(cfg, params)

  def init(self, params: Any):
    return self.chain.init(params)

  def apply(self, params, opt_state, ema, grads_sum, num_micro):
    """The step's update from the sum of `num_micro` micro-batches' gradients.

    Returns (params, opt_state, ema, finite, grad_norm): `finite` is False when a gradient value
    is not finite (or their squared norm overflows float32); then params, state and EMA come
    back unchanged. grad_norm is the averaged gradient's norm, before clipping.
    """
    cfg = self.cfg
    b1, b2, eps, clip = float(cfg.b1), float(cfg.b2), float(cfg.eps), float(cfg.clip_norm)
    wd, ema_decay = float(cfg.weight_decay), float(cfg.ema_decay)
    # from the sum itself: a reduction of `g / num_micro` would share that quotient with the
    # per-leaf update, and XLA would then materialise it
    sq = sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads_sum))
    finite = jnp.isfinite(sq)
    norm = jnp.sqrt(sq) / num_micro
    ia, isch = _state_index(opt_state, optax.ScaleByAdamState), _state_index(
        opt_state, optax.ScaleByScheduleState)
    adam, sched = opt_state[ia], opt_state[isch]
    count = optax.safe_increment(adam.count)
    bc1, bc2 = 1 - b1 ** count, 1 - b2 ** count
    step_size = -self.schedule(sched.count)

    # averaging and clipping as one factor: XLA then recomputes g * factor wherever it is read
    # instead of materialising the scaled gradient
    factor = (jnp.where(norm < clip, 1.0, clip / norm) if clip else 1.0) / num_micro

    def leaf(p, g, mu, nu, e, decay, mult):
      # The chain's operations in its order (Adam, weight decay, schedule, group factor). Each
      # value is computed from the selected outputs before it (which equal the new values when
      # the step is applied, and leave the kept old ones unused when it is skipped), so every
      # fusion reads buffers already written instead of the inputs they overwrite.
      keep = lambda new, old: jnp.where(finite, new, old)
      g = g * factor.astype(g.dtype)
      mu = keep(((1 - b1) * g + b1 * mu).astype(mu.dtype), mu)
      nu = keep(((1 - b2) * (g * g) + b2 * nu).astype(nu.dtype), nu)
      u = (mu / bc1.astype(mu.dtype)) / (jnp.sqrt(nu / bc2.astype(nu.dtype)) + eps)
      if decay:
        u = u + wd * p
      u = (step_size.astype(u.dtype) * u) * jnp.asarray(mult, u.dtype)
      p = keep((p + u).astype(p.dtype), p)
      # the EMA (float32) of the new parameters
      return p, mu, nu, keep(e * ema_decay + p.astype(e.dtype) * (1.0 - ema_decay), e)

    out = jax.tree.map(leaf, params, grads_sum, adam.mu, adam.nu, ema, self.decay_mask,
                       self.lr_mults)
    treedef = jax.tree.structure(params)
    new_params, mu, nu, new_ema = (treedef.unflatten(x) for x in zip(*treedef.flatten_up_to(out)))
    state = list(opt_state)
    state[ia] = optax.ScaleByAdamState(count=jnp.where(finite, count, adam.count), mu=mu, nu=nu)
    state[isch] = optax.ScaleByScheduleState(
        count=jnp.where(finite, optax.safe_increment(sched.count), sched.count))
    return new_params, tuple(state), new_ema, finite, norm
