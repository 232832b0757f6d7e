"""Chunked (online-softmax) attention equals dense masked attention, values and gradients."""
import jax
import jax.numpy as jnp
import numpy as np

from atoken_jax.model import attention


def test_chunked_attention_matches_dense_values_and_gradients():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(k1, (2, 37, 3, 8))
  k = jax.random.normal(k2, (2, 37, 3, 8))
  v = jax.random.normal(k3, (2, 37, 3, 8))
  groups = jnp.asarray(np.random.default_rng(0).integers(0, 4, (2, 37)))
  info = {"g": groups}
  mask_fn = lambda a, b: attention.same_group(a["g"], b["g"])

  def dense(q, k, v):
    return attention.dense_attention(q, k, v, mask_fn(info, info), softcap=30.0)

  def chunked(q, k, v):
    return attention.chunked_attention(q, k, v, info, info, mask_fn, 8, softcap=30.0)

  np.testing.assert_allclose(chunked(q, k, v), dense(q, k, v), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))
  gd = jax.grad(loss(dense), argnums=(0, 1, 2))(q, k, v)
  gc = jax.grad(loss(chunked), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(gc, gd):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
