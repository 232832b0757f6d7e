"""Gram-matrix loss on the LPIPS trunk: formula, normalisation, properties, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atoken_jax.perceptual import (LPIPS, gram_loss, gram_loss_from_features, gram_matrix,
                                   random_lpips_params)


def test_gram_matrix_formula():
  rng = np.random.default_rng(0)
  f = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)
  want = np.stack([fi.reshape(15, 4).T @ fi.reshape(15, 4) for fi in f]) / (5 * 3 * 4)
  np.testing.assert_allclose(gram_matrix(f), want, rtol=1e-5)
  # permuting pixels leaves the Gram matrix unchanged
  perm = rng.permutation(15)
  fp = f.reshape(2, 15, 4)[:, perm].reshape(2, 5, 3, 4)
  np.testing.assert_allclose(gram_matrix(fp), gram_matrix(f), rtol=1e-5)


def test_loss_from_features_is_sum_of_squared_frobenius():
  rng = np.random.default_rng(1)
  shapes = [(2, 8, 8, 3), (2, 4, 4, 6)]
  fx = [rng.normal(size=s).astype(np.float32) for s in shapes]
  fy = [rng.normal(size=s).astype(np.float32) for s in shapes]
  want = 0
  for a, b in zip(fx, fy):
    n, h, w, c = a.shape
    ga = np.einsum("nhwc,nhwd->ncd", a, a) / (h * w * c)
    gb = np.einsum("nhwc,nhwd->ncd", b, b) / (h * w * c)
    want = want + ((ga - gb) ** 2).sum(axis=(1, 2))
  np.testing.assert_allclose(gram_loss_from_features(fx, fy), want, rtol=1e-5)


@pytest.fixture(scope="module")
def vgg_params():
  return random_lpips_params("vgg", seed=0)


def test_gram_loss_on_vgg_taps(vgg_params):
  rng = np.random.default_rng(2)
  x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  noise = rng.normal(size=x.shape).astype(np.float32)
  fn = jax.jit(lambda a, b: gram_loss(vgg_params, a, b))
  losses = [np.asarray(fn(x, np.clip(x + s * noise, -1, 1))) for s in (0.0, 0.1, 0.5)]
  assert losses[0].shape == (2,)
  np.testing.assert_allclose(losses[0], 0.0, atol=1e-12)
  assert np.all(losses[1] < losses[2]) and np.all(losses[1] > 0)
  # same as the Gram loss of the LPIPS features computed separately
  y = np.clip(x + 0.5 * noise, -1, 1)
  feats = jax.jit(lambda a: LPIPS(net="vgg").apply({"params": vgg_params}, a,
                                                   method=LPIPS.features))
  np.testing.assert_allclose(losses[2], gram_loss_from_features(feats(x), feats(y)), rtol=1e-5)


def test_gram_loss_gradient_finite():
  params = random_lpips_params("alex", seed=1)  # AlexNet: a cheaper backward pass to compile
  rng = np.random.default_rng(3)
  x = rng.uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
  y = np.clip(x + 0.3 * rng.normal(size=x.shape), -1, 1).astype(np.float32)
  g = jax.jit(jax.grad(lambda a: gram_loss(params, a, y, net="alex").sum()))(jnp.asarray(x))
  assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0
