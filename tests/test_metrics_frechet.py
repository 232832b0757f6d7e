"""Fréchet distance: closed forms, an eigen-decomposition formula, streaming stats, degradations."""

import numpy as np
import pytest
import scipy.linalg

from atoken_jax import metrics


def _fd_eigh(a, b):
  """Independent formula: tr((Σa Σb)^½) = tr((Σa^½ Σb Σa^½)^½), symmetric roots via eigh."""
  mu_a, mu_b = a.mean(0), b.mean(0)
  ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)

  def psd_sqrt(m):
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

  ra = psd_sqrt(ca)
  tr = np.trace(psd_sqrt(ra @ cb @ ra))
  return np.sum((mu_a - mu_b) ** 2) + np.trace(ca) + np.trace(cb) - 2 * tr


def test_matches_independent_formula():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16))
  b = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16)) + 0.5
  np.testing.assert_allclose(metrics.frechet_distance(a, b), _fd_eigh(a, b), rtol=1e-8)
  assert abs(metrics.frechet_distance(a, a)) < 1e-8


def test_diagonal_closed_form():
  mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  va, vb = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
  want = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2)
  got = metrics.frechet_distance_from_stats(mu_a, np.diag(va), mu_b, np.diag(vb))
  np.testing.assert_allclose(got, want, rtol=1e-10)


def test_singular_covariances_use_eps_fallback():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(5, 32))  # rank ≤ 4 covariance in 32 dims
  b = rng.normal(size=(5, 32))
  got = metrics.frechet_distance(a, b)
  assert np.isfinite(got)
  # pytorch-fid's formula with the offset applied to both covariances
  ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root = scipy.linalg.sqrtm(ca @ cb)
  if not np.isfinite(root).all():
    off = np.eye(32) * 1e-6
    root = scipy.linalg.sqrtm((ca + off) @ (cb + off))
  want = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb)
          - 2 * np.trace(root.real))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_streaming_stats_equal_batch_stats(tmp_path):
  rng = np.random.default_rng(2)
  a = rng.normal(size=(257, 8)).astype(np.float32) * 3 + 100  # large offset: numerically hard
  s = metrics.FrechetStats()
  for chunk in np.array_split(a, [1, 50, 51, 200]):
    s.update(chunk)
  mu, cov = metrics.feature_stats(a)
  np.testing.assert_allclose(s.mean, mu, rtol=1e-12)
  np.testing.assert_allclose(s.cov, cov, rtol=1e-9, atol=1e-9)
  left, right = metrics.FrechetStats().update(a[:100]), metrics.FrechetStats().update(a[100:])
  merged = left.merge(right)
  np.testing.assert_allclose(merged.cov, cov, rtol=1e-9, atol=1e-9)
  s.save(tmp_path / "ref.npz")
  back = metrics.FrechetStats.load(tmp_path / "ref.npz")
  assert back.count == 257
  b = rng.normal(size=(100, 8))
  other = metrics.FrechetStats().update(b)
  np.testing.assert_allclose(back.distance(other), metrics.frechet_distance(a, b), rtol=1e-9)


def test_more_noise_gives_larger_distance():
  rng = np.random.default_rng(3)
  a = rng.normal(size=(500, 10))
  base = rng.normal(size=(500, 10))
  d = [metrics.frechet_distance(a, base * (1 + s) + s) for s in (0.0, 0.2, 0.5)]
  assert d[0] < d[1] < d[2]


def test_bad_inputs():
  with pytest.raises(ValueError, match="N >= 2"):
    metrics.frechet_distance(np.zeros((1, 4)), np.zeros((3, 4)))
  with pytest.raises(ValueError, match="differ"):
    metrics.frechet_distance(np.zeros((3, 4)), np.zeros((3, 5)))
  with pytest.raises(ValueError, match="dim"):
    metrics.FrechetStats().update(np.zeros((3, 4))).update(np.zeros((3, 5)))
