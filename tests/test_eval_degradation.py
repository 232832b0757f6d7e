"""Controlled degradations: more noise must give a lower PSNR / SSIM and a higher LPIPS, rFID
and rFVD (feature networks with random weights: the ordering, not the values, is the property)."""
import jax
import ml_collections
import numpy as np

from atoken_jax import metrics
from atoken_jax.eval.resources import Resources
from atoken_jax.features import I3DFeatures, InceptionFeatures, i3d

NOISE = (0.03, 0.12, 0.4)


def _smooth_images(n, size, rng):
  """Sums of random oriented ramps and blobs: image-like, in [-1, 1]."""
  yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
  out = []
  for _ in range(n):
    a, b, c = rng.normal(size=(3, 3))
    cx, cy, r = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.5)
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r ** 2)
    img = a * xx[..., None] * 0.4 + b * yy[..., None] * 0.4 + c * blob[..., None] * 0.6
    out.append(np.tanh(img))
  return np.stack(out).astype(np.float32)


def _noisy(x, sigma, rng):
  return np.clip(x + rng.normal(0, sigma, x.shape), -1, 1).astype(np.float32)


def test_image_metrics_worsen_with_noise():
  rng = np.random.default_rng(0)
  real = _smooth_images(16, 64, rng)
  res = Resources(ml_collections.ConfigDict(dict(features=dict(lpips="random", lpips_net="alex"))))
  inc = InceptionFeatures.random(0, batch_size=16, dims=64)  # the stem only: fast on CPU
  f_real = inc(real)
  psnr, ssim, lp, fid = [], [], [], []
  for sigma in NOISE:
    fake = _noisy(real, sigma, rng)
    p, s = res.image_metrics(real, fake)
    psnr.append(float(np.mean(p)))
    ssim.append(float(np.mean(s)))
    lp.append(float(np.mean(res.lpips(real, fake))))
    fid.append(metrics.frechet_distance(f_real, inc(fake)))
  assert psnr[0] > psnr[1] > psnr[2] and ssim[0] > ssim[1] > ssim[2]
  assert lp[0] < lp[1] < lp[2], lp
  assert 0 <= fid[0] < fid[1] < fid[2], fid
  assert abs(metrics.frechet_distance(f_real, inc(real))) < 1e-6 * fid[2]


def test_fvd_grows_with_noise():
  rng = np.random.default_rng(1)
  frames = _smooth_images(6, 48, rng)
  drift = np.linspace(0, 0.3, 8)[:, None, None, None]
  real = np.clip(frames[:, None] + drift[None], -1, 1).astype(np.float32)  # [6, 8, 48, 48, 3]
  # 16 classes (a small Fréchet problem) and no 224 resize keep this fast on a CPU.
  net = I3DFeatures(i3d.random_params(0, num_classes=16), batch_size=6)
  net._fn = jax.jit(lambda p, x: i3d.I3D(16, resize=False).apply({"params": p}, x)["logits"])
  f_real = net(real)
  fvd = [metrics.frechet_distance(f_real, net(_noisy(real, s, rng))) for s in NOISE]
  assert fvd[0] < fvd[1] < fvd[2], fvd
