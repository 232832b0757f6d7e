"""The Gaussian-decoder objective L1 + 0.2·LPIPS(VGG) + 0.2·(1 − MS-SSIM): each term against a
direct computation, view masks, the reduced-scale MS-SSIM fallback, gradients through it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atoken_jax import metrics, perceptual
from atoken_jax.gs3d import objective


@pytest.fixture(scope="module")
def vgg():
  return perceptual.random_lpips_params("vgg", seed=3)


def _images(shape, seed):
  """Smooth images in [0, 1] plus a noisy copy (nonzero, non-trivial terms)."""
  rng = np.random.default_rng(seed)
  h, w = shape[-3:-1]
  yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
  base = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx * yy)], -1)
  target = np.clip(base * rng.uniform(0.5, 1.0, shape[:-3] + (1, 1, 3)), 0, 1)
  pred = np.clip(target + rng.normal(0, 0.08, target.shape), 0, 1)
  return pred.astype(np.float32), target.astype(np.float32)


def test_terms_equal_direct_computation_at_full_ms_ssim_size(vgg):
  """176 px: the standard 5-scale MS-SSIM applies (> 160 px)."""
  pred, target = _images((1, 1, 176, 176, 3), seed=0)
  mask = np.array([[True]])
  w = objective.LossWeights()
  assert (w.l1, w.lpips, w.ssim, w.ssim_scales, w.lpips_net) == (1.0, 0.2, 0.2, 5, "vgg")
  loss, m = jax.jit(lambda p, t: objective.gs_loss(p, t, mask, vgg, w))(pred, target)
  p2, t2 = pred.reshape(-1, 176, 176, 3), target.reshape(-1, 176, 176, 3)
  l1 = np.mean(np.abs(p2.astype(np.float64) - t2), axis=(1, 2, 3)).mean()
  lp = np.asarray(jax.jit(lambda a, b: perceptual.lpips_distance(vgg, a, b, net="vgg"))(
      p2 * 2 - 1, t2 * 2 - 1)).mean()
  ms = np.asarray(jax.jit(lambda a, b: metrics.ms_ssim(a, b, data_range=1.0))(p2, t2)).mean()
  np.testing.assert_allclose(m["l1"], l1, rtol=1e-5)
  np.testing.assert_allclose(m["lpips"], lp, rtol=1e-4)
  np.testing.assert_allclose(m["ms_ssim"], ms, rtol=1e-5)
  assert 0.05 < ms < 0.95 and lp > 0 and l1 > 0.01
  np.testing.assert_allclose(loss, l1 + 0.2 * lp + 0.2 * (1 - ms), rtol=1e-5)
  assert float(m["views"]) == 1


def test_view_mask_excludes_padded_views_and_weights_per_view():
  pred, target = _images((2, 3, 48, 48, 3), seed=1)
  mask = np.array([[True, False, True], [False, False, True]])
  w = objective.LossWeights(lpips=0.0, ssim_scales=3)
  loss, m = objective.gs_loss(pred, target, mask, None, w)
  garbage = pred.copy()
  garbage[~mask] = 1.0 - garbage[~mask]  # masked views: anything
  loss2, _ = objective.gs_loss(garbage, target, mask, None, w)
  np.testing.assert_allclose(loss, loss2, rtol=1e-6)
  per = objective.view_terms(pred, target, None, w)
  l1 = np.asarray(per["l1"])[mask].mean()
  ms = np.asarray(per["ms_ssim"])[mask].mean()
  np.testing.assert_allclose(loss, l1 + 0.2 * (1 - ms), rtol=1e-5)
  none, m0 = objective.gs_loss(pred, target, np.zeros_like(mask), None, w)
  assert float(none) == pytest.approx(0.2) and float(m0["views"]) == 0  # 0 terms, 1 - 0 SSIM


def test_fewer_scales_for_small_images():
  assert objective.min_image_side(5) == 161 and objective.min_image_side(3) == 41
  w3 = objective.ssim_weights(3)
  assert sum(w3) == pytest.approx(1.0) and w3[0] == pytest.approx(0.0448 / 0.6305)
  assert objective.ssim_weights(5) == metrics.MS_SSIM_WEIGHTS
  pred, target = _images((2, 40, 40, 3), seed=2)
  with pytest.raises(ValueError, match="smaller image side"):
    objective.view_terms(pred, target, None, objective.LossWeights(lpips=0.0, ssim_scales=3))
  # one scale = the mean SSIM (contrast clamped at 0, positive here)
  one = objective.view_terms(pred, target, None, objective.LossWeights(lpips=0.0, ssim_scales=1))
  np.testing.assert_allclose(one["ms_ssim"], metrics.ssim(pred, target, data_range=1.0),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="ssim_scales"):
    objective.ssim_weights(6)


def test_gradient_of_every_term_is_finite_and_nonzero(vgg):
  pred, target = _images((1, 1, 64, 64, 3), seed=4)
  w = objective.LossWeights(ssim_scales=3)
  terms = lambda params, p: jnp.stack(
      [v[0, 0] for v in objective.view_terms(p, target, params, w).values()])
  jac = np.asarray(jax.jit(jax.jacrev(terms, argnums=1))(vgg, pred))
  assert jac.shape == (3,) + pred.shape  # l1, lpips, ms_ssim
  assert np.isfinite(jac).all() and (np.abs(jac).reshape(3, -1).max(1) > 0).all()
