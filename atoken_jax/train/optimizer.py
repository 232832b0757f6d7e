"""AdamW with parameter groups, warm-up + cosine schedule, clipping, and the parameter EMA.

Paper §3.5: AdamW (0.9, 0.95), weight decay 0.1, 2k warm-up to 3e-4 then cosine to 3e-5, the
SigLIP2-initialised encoder (trunk and pooling head) at 0.1x the learning rate, EMA 0.9999.
No weight decay on norms, biases, position tables, the pooling probe and the SigLIP logit
scale/bias. Group membership is decided by parameter path in one place (`lr_multiplier`,
`decays`), so a reader can check it.
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


def make_optimizer(cfg: ml_collections.ConfigDict, params: Any,
                   total_steps: int) -> optax.GradientTransformation:
  """cfg: lr, end_lr, warmup_steps, b1, b2, eps, weight_decay, encoder_lr_mult, clip_norm."""
  decay_mask = jax.tree_util.tree_map_with_path(lambda p, _: decays(p), params)
  mults = jax.tree_util.tree_map_with_path(
      lambda p, _: lr_multiplier(p, cfg.encoder_lr_mult), params)
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


def ema_update(ema: Any, params: Any, decay: float) -> Any:
  """ema <- decay * ema + (1 - decay) * params, in the EMA's dtype (float32)."""
  return jax.tree.map(lambda e, p: e * decay + p.astype(e.dtype) * (1.0 - decay), ema, params)
