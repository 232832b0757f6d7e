"""Peak signal-to-noise ratio (PSNR), jittable.

Convention: images are channels-last, ``[..., H, W, C]``; the mean squared error is taken over the
last three axes, so each image gets its own PSNR and any leading axes (batch, time) are kept.
Identical images give ``+inf`` (as skimage's ``peak_signal_noise_ratio``).
"""

import jax.numpy as jnp

from atoken_jax.metrics.ssim import image_pair


def psnr(x, y, data_range=2.0):
  """PSNR in dB, ``10·log10(data_range² / MSE)`` per image.

  Args:
    x, y: images ``[H, W, C]`` or batches ``[N, H, W, C]`` (any leading axes), same shape.
      Inputs in ``[-1, 1]`` have ``data_range=2.0`` (the default); ``[0, 1]`` → 1.0; uint8 → 255.
    data_range: peak-to-peak range of the signal.

  Returns:
    float32 scalar for one image, ``[N]`` (the leading axes) for a batch.
  """
  x, y = image_pair(x, y, "psnr")
  mse = jnp.mean(jnp.square(x - y), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(jnp.float32(data_range) ** 2 / mse)
