"""Frozen perceptual networks: LPIPS (VGG16 / AlexNet trunks) and the Gram-matrix loss."""

from atoken_jax.perceptual.alexnet import AlexNetFeatures
from atoken_jax.perceptual.gram import gram_loss, gram_loss_from_features, gram_matrix
from atoken_jax.perceptual.lpips import LPIPS, lpips_distance
from atoken_jax.perceptual.vgg import VGG16Features
from atoken_jax.perceptual.weights import (load_lpips_params, packaged_linear_path,
                                           random_lpips_params, save_lpips_params)

__all__ = [
    "AlexNetFeatures", "LPIPS", "VGG16Features", "gram_loss", "gram_loss_from_features",
    "gram_matrix", "load_lpips_params", "lpips_distance", "packaged_linear_path",
    "random_lpips_params", "save_lpips_params",
]
