"""Fréchet distance between Gaussians fitted to feature sets (FID / FVD), on the host.

``d² = |μ_a − μ_b|² + tr(Σ_a) + tr(Σ_b) − 2 tr((Σ_a Σ_b)^{1/2})`` with pytorch-fid's conventions:
float64 means and *sample* covariances (``np.cov(feats, rowvar=False)``, divisor N − 1), the matrix
square root from ``scipy.linalg.sqrtm``; when that product is singular and the root is not finite,
``eps·I`` is added to both covariances and the root recomputed; a complex root is accepted only if
the imaginary part of its diagonal is within 1e-3 of zero, and its real part is used.
Not jittable: numpy/scipy on the host (features come off the device once per evaluation).
"""

import numpy as np
import scipy.linalg


def frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b, eps=1e-6):
  """Fréchet distance between ``N(mu_a, cov_a)`` and ``N(mu_b, cov_b)``.

  Args:
    mu_a, mu_b: ``[D]`` means.
    cov_a, cov_b: ``[D, D]`` covariances.
    eps: diagonal offset used only when ``sqrtm(cov_a @ cov_b)`` is not finite.

  Returns:
    Python float.
  """
  mu_a = np.atleast_1d(np.asarray(mu_a, np.float64))
  mu_b = np.atleast_1d(np.asarray(mu_b, np.float64))
  cov_a = np.atleast_2d(np.asarray(cov_a, np.float64))
  cov_b = np.atleast_2d(np.asarray(cov_b, np.float64))
  if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape:
    raise ValueError(f"frechet: statistics differ in shape: {mu_a.shape}/{cov_a.shape} vs "
                     f"{mu_b.shape}/{cov_b.shape}")
  diff = mu_a - mu_b
  root = scipy.linalg.sqrtm(cov_a @ cov_b)
  if not np.isfinite(root).all():
    off = np.eye(cov_a.shape[0]) * eps
    root = scipy.linalg.sqrtm((cov_a + off) @ (cov_b + off))
  if np.iscomplexobj(root):
    imag = np.abs(np.diagonal(root).imag).max()
    if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
      raise ValueError(f"frechet: sqrtm has an imaginary component {imag}")
    root = root.real
  return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))


def feature_stats(feats):
  """Mean ``[D]`` and sample covariance ``[D, D]`` (float64) of features ``[N, D]``, N ≥ 2."""
  f = np.asarray(feats, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"frechet: need features [N >= 2, D], got shape {f.shape}")
  return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(feats_a, feats_b, eps=1e-6):
  """Fréchet distance between feature sets ``[N_a, D]`` and ``[N_b, D]`` (float).

  N_a and N_b may differ; use :class:`FrechetStats` to accumulate features batch by batch.
  """
  return frechet_distance_from_stats(*feature_stats(feats_a), *feature_stats(feats_b), eps=eps)


class FrechetStats:
  """Streaming mean and sample covariance of features (float64, Chan et al.'s pairwise update).

  ``update(batch [n, D])`` any number of times (or ``merge`` per-host partial statistics), then
  ``mean``, ``cov`` (divisor N − 1, as ``np.cov``) and ``distance(other)``. ``save``/``load`` use
  ``.npz`` without pickles, for reference statistics of a dataset.
  """

  def __init__(self, dim=None):
    self.count = 0
    self.dim = dim
    self._mean = None if dim is None else np.zeros(dim)
    self._m2 = None if dim is None else np.zeros((dim, dim))

  def _add(self, n, mean, m2):
    if n == 0:
      return self
    if self._mean is None:
      self.dim = mean.shape[0]
      self._mean, self._m2 = np.zeros(self.dim), np.zeros((self.dim, self.dim))
    if mean.shape[0] != self.dim:
      raise ValueError(f"FrechetStats: feature dim {mean.shape[0]} != {self.dim}")
    total = self.count + n
    delta = mean - self._mean
    self._m2 = self._m2 + m2 + np.outer(delta, delta) * (self.count * n / total)
    self._mean = self._mean + delta * (n / total)
    self.count = total
    return self

  def update(self, feats):
    """Adds a batch of features ``[n, D]``; returns self."""
    f = np.asarray(feats, np.float64)
    if f.ndim != 2:
      raise ValueError(f"FrechetStats.update: need [n, D], got shape {f.shape}")
    mean = f.mean(axis=0) if f.shape[0] else np.zeros(f.shape[1])
    c = f - mean
    return self._add(f.shape[0], mean, c.T @ c)

  def merge(self, other):
    """Adds another accumulator's statistics (e.g. from another host); returns self."""
    if other.count:
      self._add(other.count, other._mean, other._m2)
    return self

  @property
  def mean(self):
    """``[D]`` float64."""
    return self._mean

  @property
  def cov(self):
    """``[D, D]`` float64 sample covariance (needs count ≥ 2)."""
    if self.count < 2:
      raise ValueError("FrechetStats: need at least 2 samples for a covariance")
    return self._m2 / (self.count - 1)

  def distance(self, other, eps=1e-6):
    """Fréchet distance to another :class:`FrechetStats` (float)."""
    return frechet_distance_from_stats(self.mean, self.cov, other.mean, other.cov, eps=eps)

  def save(self, path):
    """Writes ``count``, ``mean`` and ``m2`` to an ``.npz`` file."""
    mean = np.zeros(0) if self._mean is None else self._mean
    m2 = np.zeros((0, 0)) if self._m2 is None else self._m2
    np.savez(path, count=np.int64(self.count), mean=mean, m2=m2)

  @classmethod
  def load(cls, path):
    """Reads a file written by :meth:`save` (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as z:
      s = cls()
      s._add(int(z["count"]), z["mean"].astype(np.float64), z["m2"].astype(np.float64))
    return s
