"""Image-quality metrics: PSNR, SSIM, MS-SSIM (jittable) and the Fréchet distance (host).

The LPIPS network lives in :mod:`atoken_jax.perceptual`.
"""

from atoken_jax.metrics.frechet import (FrechetStats, feature_stats, frechet_distance,
                                        frechet_distance_from_stats)
from atoken_jax.metrics.psnr import psnr
from atoken_jax.metrics.ssim import MS_SSIM_WEIGHTS, ms_ssim, ssim

__all__ = [
    "FrechetStats", "MS_SSIM_WEIGHTS", "feature_stats", "frechet_distance",
    "frechet_distance_from_stats", "ms_ssim", "psnr", "ssim",
]
