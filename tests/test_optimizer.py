"""The fused update (`optimizer.AdamW.apply`) against its definition: optax's chain from
`make_optimizer`, then the skip of a non-finite step and the EMA, written the plain way."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from atoken_jax.train import optimizer


def _cfg(**overrides):
  c = ml_collections.ConfigDict(dict(lr=1e-2, end_lr=1e-3, warmup_steps=2, b1=0.9, b2=0.95,
                                     eps=1e-8, weight_decay=0.1, encoder_lr_mult=0.1,
                                     clip_norm=1.0, ema_decay=0.9))
  c.update(overrides)
  return c


def _params(rng):
  """A tree with every parameter group: encoder matrices (0.1x LR), decoder matrices, biases and
  norms (no weight decay), a position table."""
  shapes = {"model": {"encoder": {"fc": {"kernel": (6, 5), "bias": (5,)}},
                      "decoder": {"fc": {"kernel": (5, 7), "bias": (7,)},
                                  "norm": {"scale": (7,)},
                                  "pos_embedder": {"table": (3, 4)}}},
            "siglip": {"logit_scale": ()}}
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
  return treedef.unflatten([jnp.asarray(rng.normal(size=s), jnp.float32) for s in leaves])


def _reference(opt, params, opt_state, ema, grads_sum, num_micro):
  """What the step computed before the fusion: chain update, apply, EMA, tree-wide select."""
  grads = jax.tree.map(lambda g: g / num_micro, grads_sum)
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
  updates, new_state = opt.chain.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  d = opt.cfg.ema_decay
  new_ema = jax.tree.map(lambda e, p: e * d + p * (1.0 - d), ema, new_params)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  return (keep(new_params, params), keep(new_state, opt_state), keep(new_ema, ema), finite,
          optax.global_norm(grads))


def _close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-6,
                                                        atol=1e-9), a, b)


@pytest.mark.parametrize("clip_norm", [1.0, 0.0])
def test_fused_update_equals_the_optax_chain_with_skip_and_ema(clip_norm):
  rng = np.random.default_rng(0)
  params = _params(rng)
  opt = optimizer.AdamW(_cfg(clip_norm=clip_norm), params, total_steps=10)
  ours = ref = (params, opt.init(params), params)
  fused = jax.jit(opt.apply)
  # gradient scales: clipped (norm >> 1), not clipped, a NaN (skipped), clipped again
  for step, scale in enumerate([3.0, 0.05, float("nan"), 2.0]):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.3, p.dtype), params)
    if np.isnan(scale):
      grads["model"]["decoder"]["fc"]["kernel"] = grads["model"]["decoder"]["fc"]["kernel"].at[
          1, 2].set(jnp.nan)
    else:
      grads = jax.tree.map(lambda g, s=scale: g * s, grads)
    num_micro = jnp.float32(1 + step % 2)
    out = fused(*ours, grads, num_micro)
    want = _reference(opt, *ref, grads, num_micro)
    assert bool(out[3]) == bool(want[3]) == (not np.isnan(scale))
    if np.isnan(scale):  # a skipped step leaves everything exactly as it was
      jax.tree.map(np.testing.assert_array_equal, out[:3], ours)
    else:
      np.testing.assert_allclose(float(out[4]), float(want[4]), rtol=1e-6)
    _close(out[:3], want[:3])
    ours, ref = out[:3], want[:3]
  # the moments moved, the step counters count applied steps only
  adam = ours[1][[isinstance(s, optax.ScaleByAdamState) for s in ours[1]].index(True)]
  assert int(adam.count) == 3
  assert float(jnp.abs(adam.mu["model"]["encoder"]["fc"]["kernel"]).max()) > 0


def test_fused_update_writes_in_place():
  """No temporaries the size of the parameters: the property the fusion exists for."""
  tree = lambda: {f"w{i}": jnp.zeros((256, 1024), jnp.float32) for i in range(8)}  # 8 MiB
  params = tree()
  opt = optimizer.AdamW(_cfg(), params, total_steps=10)
  compiled = jax.jit(opt.apply, donate_argnums=(0, 1, 2)).lower(
      params, opt.init(params), tree(), tree(), jnp.float32(1)).compile()
  param_bytes = sum(p.size * 4 for p in params.values())
  assert compiled.memory_analysis().temp_size_in_bytes < 0.05 * param_bytes
