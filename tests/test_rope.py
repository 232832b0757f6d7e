"""4D RoPE: relative property, axis layout and frequencies as the release computes them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atoken_jax.model import rope


def _scores(q, k, pq, pk, head_dim):
  aq = rope.rope_angles(jnp.asarray(pq)[None, None], head_dim)
  ak = rope.rope_angles(jnp.asarray(pk)[None, None], head_dim)
  rq = rope.apply_rope(q[None, None, None], aq)
  rk = rope.apply_rope(k[None, None, None], ak)
  return float(jnp.sum(rq * rk))


@pytest.mark.parametrize("head_dim", [16, 72])
def test_scores_depend_only_on_relative_position(head_dim):
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=head_dim), jnp.float32)
  k = jnp.asarray(rng.normal(size=head_dim), jnp.float32)
  p = np.array([3, 5, 7, 2], np.float32)
  d = np.array([1, -2, 4, 3], np.float32)
  base = _scores(q, k, p + d, p, head_dim)
  for shift in ([10, 0, 0, 0], [0, 7, -3, 0], [2, 20, 11, 9]):
    s = np.asarray(shift, np.float32)
    assert _scores(q, k, p + d + s, p + s, head_dim) == pytest.approx(base, rel=1e-4, abs=1e-4)
  # and they do depend on the offset along every axis
  for axis in range(4):
    e = np.zeros(4, np.float32)
    e[axis] = 1
    assert abs(_scores(q, k, p + d + e, p, head_dim) - base) > 1e-4


def test_layout_and_frequencies_match_release():
  """Axis blocks [t|x|y|z] of D/4 channels, interleaved pairs, freq_i = 10000^(-i/D)."""
  d = 72
  pos = np.array([2.0, 3.0, 5.0, 7.0], np.float32)
  angles = np.asarray(rope.rope_angles(jnp.asarray(pos), d))
  n = d // 8
  freqs = 10000.0 ** (-np.arange(n) / d)
  expected = np.concatenate([p * freqs for p in pos])
  np.testing.assert_allclose(angles, expected, rtol=1e-6)
  x = np.random.default_rng(1).normal(size=d).astype(np.float32)
  out = np.asarray(rope.apply_rope(jnp.asarray(x)[None, None, None],
                                   jnp.asarray(angles)[None, None]))[0, 0, 0]
  z = (x[0::2] + 1j * x[1::2]) * np.exp(1j * expected)
  np.testing.assert_allclose(out[0::2], z.real, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out[1::2], z.imag, rtol=1e-5, atol=1e-5)


def test_rotation_preserves_norm_and_rejects_bad_head_dim():
  x = jax.random.normal(jax.random.key(0), (1, 5, 2, 16))
  a = rope.rope_angles(jnp.arange(20.0).reshape(1, 5, 4), 16)
  np.testing.assert_allclose(jnp.linalg.norm(rope.apply_rope(x, a), axis=-1),
                             jnp.linalg.norm(x, axis=-1), rtol=1e-5)
  with pytest.raises(ValueError, match="head_dim % 8"):
    rope.rope_angles(jnp.zeros((1, 4)), 12)
