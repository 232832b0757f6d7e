"""SSIM and MS-SSIM with Gaussian windows, jittable and differentiable.

SSIM follows ``skimage.metrics.structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=..., channel_axis=-1)``:
  * a separable Gaussian window, σ = 1.5 truncated at 3.5 σ → radius 5, 11 taps, normalised;
  * population (biased) local covariances, K1 = 0.01, K2 = 0.03, C_i = (K_i · data_range)²;
  * skimage filters with 'reflect' borders and then drops a 5-pixel strip on every side; that
    kept region only ever sees in-image pixels, so it equals a 'valid' correlation, which is what
    is computed here;
  * the SSIM map is averaged over the valid region and over channels (each image separately).

MS-SSIM is the 5-scale index of Wang, Simoncelli & Bovik (2003) as the ``pytorch-msssim`` package
defines it (``ms_ssim(..., win_size=11, win_sigma=1.5, K=(0.01, 0.03))``):
  * per scale and per channel, the valid-region means of the contrast-structure map ``cs`` (scales
    1–4) and of the full SSIM map (scale 5), each clamped at 0 (ReLU);
  * weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); ``∏ cs_j^{w_j} · ssim_5^{w_5}`` per channel,
    then the mean over channels;
  * between scales a 2×2 average pool, stride 2; an odd side is first zero-padded by one pixel on
    both ends with the zeros counted (PyTorch's ``avg_pool2d(padding=1)``, count_include_pad);
  * the smaller image side must exceed ``(win_size − 1) · 2**(scales − 1)`` (160 for the defaults).
  torchmetrics' MS-SSIM differs in two details: it averages over channels before taking powers and
  does not clamp negative values by default; values agree when all ``cs`` are positive and the
  channels are alike, not in general.
"""

import jax
import jax.numpy as jnp
import numpy as np

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window(size, sigma):
  """Normalised 1-D Gaussian taps, float64 ``[size]`` (``size`` odd, centred)."""
  if size % 2 != 1:
    raise ValueError(f"window size must be odd, got {size}")
  r = size // 2
  t = np.arange(-r, r + 1, dtype=np.float64)
  w = np.exp(-0.5 * (t / sigma) ** 2)
  return w / w.sum()


def _skimage_window_size(sigma, truncate):
  """skimage/ndimage radius ``int(truncate·σ + 0.5)`` → window size ``2r + 1`` (11 for σ=1.5)."""
  return 2 * int(truncate * sigma + 0.5) + 1


def filter_valid(x, window):
  """Separable 'valid' correlation of every channel with ``window ⊗ window``.

  Args:
    x: ``[B, H, W, K]`` float.
    window: ``[k]`` taps.

  Returns:
    ``[B, H − k + 1, W − k + 1, K]``.
  """
  k = window.shape[0]
  ch = x.shape[-1]
  w = jnp.asarray(window, x.dtype)
  dn = ("NHWC", "HWIO", "NHWC")
  hi = jax.lax.Precision.HIGHEST
  kh = jnp.tile(w.reshape(k, 1, 1, 1), (1, 1, 1, ch))
  kw = jnp.tile(w.reshape(1, k, 1, 1), (1, 1, 1, ch))
  x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn,
                                   feature_group_count=ch, precision=hi)
  return jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn,
                                      feature_group_count=ch, precision=hi)


def _ssim_cs_maps(x, y, window, data_range, k1, k2):
  """Local SSIM and contrast-structure maps.

  Args:
    x, y: ``[B, H, W, C]`` float32.

  Returns:
    ``(ssim_map, cs_map)``, each ``[B, H − k + 1, W − k + 1, C]``.
  """
  c = x.shape[-1]
  stats = filter_valid(jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1), window)
  ux, uy, uxx, uyy, uxy = (stats[..., i * c:(i + 1) * c] for i in range(5))
  vx = uxx - ux * ux
  vy = uyy - uy * uy
  vxy = uxy - ux * uy
  c1 = (k1 * data_range) ** 2
  c2 = (k2 * data_range) ** 2
  cs = (2.0 * vxy + c2) / (vx + vy + c2)
  lum = (2.0 * ux * uy + c1) / (ux * ux + uy * uy + c1)
  return lum * cs, cs


def image_pair(x, y, name):
  """Two image arrays [..., H, W, C] of one shape, as float32 (else one clear ValueError)."""
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if x.shape != y.shape:
    raise ValueError(f"{name}: shapes differ: {x.shape} vs {y.shape}")
  if x.ndim < 3:
    raise ValueError(f"{name}: expected [..., H, W, C], got shape {x.shape}")
  return x, y


def _as_batch(x, y, name):
  x, y = image_pair(x, y, name)
  lead = x.shape[:-3]
  return x.reshape((-1,) + x.shape[-3:]), y.reshape((-1,) + y.shape[-3:]), lead


def ssim(x, y, data_range=2.0, sigma=1.5, truncate=3.5, k1=0.01, k2=0.03):
  """Mean SSIM per image, skimage's Gaussian-window convention (see module docstring).

  Args:
    x, y: images ``[H, W, C]`` or batches ``[N, H, W, C]`` (any leading axes); H, W ≥ 11.
    data_range: peak-to-peak range (2.0 for ``[-1, 1]`` inputs).

  Returns:
    float32 scalar for one image, ``[N]`` (the leading axes) for a batch.
  """
  x, y, lead = _as_batch(x, y, "ssim")
  size = _skimage_window_size(sigma, truncate)
  if min(x.shape[1:3]) < size:
    raise ValueError(f"ssim: images {x.shape[1:3]} are smaller than the {size}-tap window")
  s, _ = _ssim_cs_maps(x, y, gaussian_window(size, sigma), data_range, k1, k2)
  return jnp.mean(s, axis=(1, 2, 3)).reshape(lead)


def _avg_pool2(x):
  """2×2 mean pool, stride 2; odd sides zero-padded by 1 on both ends (zeros counted).

  ``[B, H, W, C]`` → ``[B, ⌊H/2⌋ + H mod 2, ⌊W/2⌋ + W mod 2, C]``.
  """
  ph, pw = x.shape[1] % 2, x.shape[2] % 2
  if ph or pw:
    x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  return s * 0.25


def _safe_pow(v, w):
  """``max(v, 0) ** w`` whose gradient is 0 (not NaN) where ``v ≤ 0``."""
  pos = v > 0
  return jnp.where(pos, jnp.exp(w * jnp.log(jnp.where(pos, v, 1.0))), 0.0)


def ms_ssim(x, y, data_range=2.0, weights=MS_SSIM_WEIGHTS, win_size=11, sigma=1.5,
            k1=0.01, k2=0.03):
  """Multi-scale SSIM per image, pytorch-msssim's definition (see module docstring).

  Args:
    x, y: images ``[H, W, C]`` or batches ``[N, H, W, C]`` (any leading axes);
      ``min(H, W) > (win_size − 1) · 2**(len(weights) − 1)``.
    data_range: peak-to-peak range (2.0 for ``[-1, 1]`` inputs).
    weights: per-scale exponents, finest first; their count is the number of scales.

  Returns:
    float32 scalar for one image, ``[N]`` (the leading axes) for a batch; in ``[0, 1]``.
  """
  x, y, lead = _as_batch(x, y, "ms_ssim")
  levels = len(weights)
  need = (win_size - 1) * 2 ** (levels - 1)
  if min(x.shape[1:3]) <= need:
    raise ValueError(f"ms_ssim: the smaller image side must be > {need} for {levels} scales and "
                     f"a {win_size}-tap window, got {x.shape[1:3]}")
  window = gaussian_window(win_size, sigma)
  val = 1.0
  for i, w in enumerate(weights):
    s_map, cs_map = _ssim_cs_maps(x, y, window, data_range, k1, k2)
    if i < levels - 1:
      val = val * _safe_pow(jnp.mean(cs_map, axis=(1, 2)), w)
      x, y = _avg_pool2(x), _avg_pool2(y)
    else:
      val = val * _safe_pow(jnp.mean(s_map, axis=(1, 2)), w)
  return jnp.mean(val, axis=-1).reshape(lead)
