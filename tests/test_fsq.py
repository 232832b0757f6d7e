"""FSQ: the release's codes and indices, invertibility, straight-through gradient."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from atoken_jax.model.bottleneck import FSQ, Posterior


def _reference_fsq(z):
  """Spec §2.7 written out per scalar in numpy float64."""
  half_l = 3 * (1 + 1e-3) / 2
  shift = np.arctanh(0.5 / half_l)
  bounded = np.tanh(z + shift) * half_l - 0.5
  q = np.round(bounded)  # numpy rounds half to even, like torch.round
  codes = q / 2
  g = codes.reshape(*z.shape[:-1], 8, 6)
  idx = ((g * 2 + 2) * (4 ** np.arange(6))).sum(-1).astype(np.int64)
  return codes, idx


def test_codes_and_indices_match_the_release_formula():
  z = np.random.default_rng(0).normal(scale=2.0, size=(257, 48)).astype(np.float32)
  codes, idx = FSQ().quantize(jnp.asarray(z))
  ref_codes, ref_idx = _reference_fsq(z.astype(np.float64))
  np.testing.assert_array_equal(np.asarray(codes), ref_codes.astype(np.float32))
  np.testing.assert_array_equal(np.asarray(idx), ref_idx)
  assert idx.dtype == jnp.int32 and int(idx.max()) < 4096 and int(idx.min()) >= 0
  assert set(np.unique(np.asarray(codes))) <= {-1.0, -0.5, 0.0, 0.5}


def test_every_index_round_trips():
  fsq = FSQ()
  all_idx = jnp.arange(4096, dtype=jnp.int32).reshape(512, 8)
  codes = fsq.indices_to_codes(all_idx)
  requant, idx = fsq.quantize(jnp.arctanh((codes * 2 + 0.5) / 1.5015) - np.arctanh(0.5 / 1.5015))
  np.testing.assert_array_equal(np.asarray(idx), np.asarray(all_idx))
  np.testing.assert_array_equal(np.asarray(requant), np.asarray(codes))
  # all 4^6 digit combinations of one group are distinct codes
  digits = np.array(list(itertools.product(range(4), repeat=6)))
  assert len({tuple(d) for d in digits}) == 4096


def test_straight_through_gradient_is_the_bound_derivative():
  fsq = FSQ()
  z = jax.random.normal(jax.random.key(0), (3, 48))
  g = jax.grad(lambda z: fsq.quantize(z)[0].sum())(z)
  g_bound = jax.grad(lambda z: (fsq.bound(z.reshape(3, 8, 6)) / 2).sum())(z)
  np.testing.assert_allclose(g, g_bound, rtol=1e-6)
  assert float(jnp.abs(g).min()) > 0


def test_posterior_kl_and_sampling():
  mean = jnp.array([[0.0, 1.0]])
  logvar = jnp.array([[0.0, np.log(4.0)]])
  post = Posterior.from_moments(jnp.concatenate([mean, logvar], -1))
  np.testing.assert_allclose(post.kl(), [0.5 * (1 + 4 - 1 - np.log(4.0))], rtol=1e-6)
  s = Posterior(jnp.zeros((20000, 1)), jnp.full((20000, 1), np.log(4.0))).sample(
      jax.random.key(0))
  assert abs(float(s.std()) - 2.0) < 0.05
