"""PSNR / SSIM / MS-SSIM against skimage and an independent float64 numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from atoken_jax import metrics

_ssim = jax.jit(metrics.ssim)  # eager dispatch compiles op by op: slower on CPU

def _pair(seed, shape, noise):
  rng = np.random.default_rng(seed)
  # smooth-ish content so SSIM is not trivially ~0
  sigma = (0,) * (len(shape) - 3) + (2, 2, 0)
  x = scipy.ndimage.gaussian_filter(rng.uniform(-1, 1, shape), sigma=sigma)
  x = np.clip(x * 3, -1, 1)
  y = np.clip(x + rng.normal(0, noise, shape), -1, 1)
  return x.astype(np.float32), y.astype(np.float32)


def _sk_ssim(a, b, data_range):
  return structural_similarity(a.astype(np.float64), b.astype(np.float64), gaussian_weights=True,
                               sigma=1.5, use_sample_covariance=False, data_range=data_range,
                               channel_axis=-1)


def test_psnr_matches_skimage_and_batches():
  x, y = _pair(0, (3, 32, 24, 3), 0.1)
  got = np.asarray(metrics.psnr(x, y))
  want = [peak_signal_noise_ratio(x[i].astype(np.float64), y[i].astype(np.float64), data_range=2.0)
          for i in range(3)]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert got.shape == (3,)
  single = metrics.psnr(x[1], y[1])
  assert single.shape == ()
  np.testing.assert_allclose(single, want[1], rtol=1e-5)
  u8 = lambda a: np.round((a + 1) * 127.5)
  np.testing.assert_allclose(metrics.psnr(u8(x[0]), u8(y[0]), data_range=255.0),
                             peak_signal_noise_ratio(u8(x[0]), u8(y[0]), data_range=255.0),
                             rtol=1e-5)
  assert np.isinf(metrics.psnr(x[0], x[0]))


@pytest.mark.parametrize("shape", [(2, 40, 37, 3), (11, 11, 3), (1, 64, 48, 1)])
def test_ssim_matches_skimage(shape):
  x, y = _pair(1, shape, 0.2)
  got = np.asarray(_ssim(x, y))
  xs, ys = x.reshape((-1,) + shape[-3:]), y.reshape((-1,) + shape[-3:])
  want = np.array([_sk_ssim(a, b, 2.0) for a, b in zip(xs, ys)]).reshape(shape[:-3])
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_ssim_data_range_and_scale():
  x, y = _pair(2, (48, 48, 3), 0.05)
  x01, y01 = (x + 1) / 2, (y + 1) / 2
  np.testing.assert_allclose(_ssim(x01, y01, data_range=1.0), _sk_ssim(x01, y01, 1.0),
                             atol=1e-5)
  # SSIM is invariant to scaling the signal together with data_range (not to shifting it)
  np.testing.assert_allclose(_ssim(2 * x01, 2 * y01, data_range=2.0),
                             _ssim(x01, y01, data_range=1.0), atol=1e-6)


def test_ssim_rejects_small_or_mismatched():
  with pytest.raises(ValueError, match="11-tap"):
    metrics.ssim(np.zeros((10, 32, 3)), np.zeros((10, 32, 3)))
  with pytest.raises(ValueError, match="shapes differ"):
    metrics.ssim(np.zeros((16, 16, 3)), np.zeros((16, 16, 1)))


def _ref_ms_ssim(x, y, data_range=2.0, weights=metrics.MS_SSIM_WEIGHTS):
  """Float64 numpy MS-SSIM of one image [H, W, C] (pytorch-msssim's definition)."""
  t = np.arange(-5, 6)
  g = np.exp(-t ** 2 / (2 * 1.5 ** 2))
  g /= g.sum()

  def filt(a):  # valid 11x11 correlation
    a = scipy.ndimage.correlate1d(a, g, axis=0)
    a = scipy.ndimage.correlate1d(a, g, axis=1)
    return a[5:-5, 5:-5]

  def pool(a):
    ph, pw = a.shape[0] % 2, a.shape[1] % 2
    a = np.pad(a, ((ph, ph), (pw, pw)))
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    return a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  per_channel = []
  for ch in range(x.shape[-1]):
    a, b = x[..., ch].astype(np.float64), y[..., ch].astype(np.float64)
    val = 1.0
    for i, w in enumerate(weights):
      ua, ub = filt(a), filt(b)
      va, vb, vab = filt(a * a) - ua ** 2, filt(b * b) - ub ** 2, filt(a * b) - ua * ub
      cs = (2 * vab + c2) / (va + vb + c2)
      s = (2 * ua * ub + c1) / (ua ** 2 + ub ** 2 + c1) * cs
      m = cs.mean() if i < len(weights) - 1 else s.mean()
      val *= max(m, 0.0) ** w
      a, b = pool(a), pool(b)
    per_channel.append(val)
  return np.mean(per_channel)


def test_ms_ssim_matches_reference_even_and_odd_sizes():
  x, y = _pair(3, (2, 176, 171, 3), 0.15)
  fn = jax.jit(metrics.ms_ssim)
  got = np.asarray(fn(x, y))
  want = [_ref_ms_ssim(x[i], y[i]) for i in range(2)]
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(fn(x, x), 1.0, atol=1e-6)


def test_ms_ssim_single_scale_equals_ssim():
  x, y = _pair(4, (2, 40, 40, 3), 0.2)
  one_scale = jax.jit(lambda a, b: metrics.ms_ssim(a, b, weights=(1.0,)))
  np.testing.assert_allclose(one_scale(x, y), np.clip(jax.jit(metrics.ssim)(x, y), 0, None),
                             atol=1e-6)


def test_ms_ssim_size_check_and_finite_grad():
  with pytest.raises(ValueError, match="> 160"):
    metrics.ms_ssim(np.zeros((160, 200, 3)), np.zeros((160, 200, 3)))
  x, y = _pair(5, (1, 32, 32, 3), 0.3)
  loss = lambda a: 1.0 - jnp.mean(metrics.ms_ssim(a, y, weights=(0.5, 0.5), win_size=7))
  g = jax.jit(jax.grad(loss))(jnp.asarray(x))
  assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).sum() > 0


def test_more_noise_is_worse():
  rng = np.random.default_rng(6)
  x, _ = _pair(6, (1, 176, 176, 3), 0.0)
  noise = rng.normal(size=x.shape).astype(np.float32)
  ys = [np.clip(x + s * noise, -1, 1) for s in (0.02, 0.1, 0.3)]
  for fn in (metrics.psnr, metrics.ssim, metrics.ms_ssim):
    vals = [float(jax.jit(fn)(x, y)[0]) for y in ys]
    assert vals[0] > vals[1] > vals[2], (fn.__name__, vals)


def test_jit_and_leading_axes():
  x, y = _pair(7, (2, 3, 24, 24, 3), 0.1)
  for fn in (metrics.psnr, metrics.ssim):
    out = jax.jit(fn)(x, y)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out[1, 2], fn(x[1, 2], y[1, 2]), rtol=1e-6)
