"""LPIPS (Zhang et al. 2018, "v0.1") as a Flax network, VGG16 or AlexNet trunk.

    d(x, y) = Σ_l mean_{h,w} Σ_c w_{l,c} · (x̂_{l,hwc} − ŷ_{l,hwc})²

where x̂_l are trunk activations at tap l of the scaled input ``(x − shift) / scale`` (the lpips
package's ScalingLayer constants) divided by their channel-vector L2 norm (+1e-10), and w_l ≥ 0 are
the learned 1×1 "linear" layers. Inputs are NHWC images in [-1, 1]; outputs ``[N]``.

Evaluation-mode only: the dropout that precedes the linear layers while *training* them in the
lpips package is not applied (it is identity in eval mode). The trunk is frozen by construction:
parameters come in through ``apply`` and are never part of a trained state.

Parameters (see :mod:`atoken_jax.perceptual.weights` to load real ones)::

  {"backbone": {"conv1_1": {"kernel": [3, 3, 3, 64], "bias": [64]}, ...},   # or conv1..conv5
   "lin0": {"kernel": [64, 1]}, ..., "lin4": {"kernel": [C_4, 1]}}

On TPU/GPU pass ``precision=jax.lax.Precision.HIGHEST`` for metric evaluation; the default
precision there rounds conv inputs to bf16/tf32.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from atoken_jax.perceptual.alexnet import ALEXNET_TAP_CHANNELS, AlexNetFeatures
from atoken_jax.perceptual.vgg import VGG16_TAP_CHANNELS, VGG16Features

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

_NETS = {
    "vgg": (VGG16Features, VGG16_TAP_CHANNELS),
    "alex": (AlexNetFeatures, ALEXNET_TAP_CHANNELS),
}
_ALIASES = {"vgg": "vgg", "vgg16": "vgg", "alex": "alex", "alexnet": "alex"}


def canonical_net(net):
  """'vgg' | 'vgg16' → 'vgg'; 'alex' | 'alexnet' → 'alex'."""
  try:
    return _ALIASES[net.lower()]
  except (KeyError, AttributeError):
    raise ValueError(f"LPIPS net must be one of {sorted(_ALIASES)}, got {net!r}") from None


def tap_channels(net):
  """Channel widths of the five taps of ``net``."""
  return _NETS[canonical_net(net)][1]


def scale_input(x):
  """LPIPS ScalingLayer: ``(x − shift) / scale`` per RGB channel; ``[..., 3]`` → ``[..., 3]``."""
  shift = jnp.asarray(LPIPS_SHIFT, x.dtype)
  scale = jnp.asarray(LPIPS_SCALE, x.dtype)
  return (x - shift) / scale


def normalize_channels(f, eps=1e-10):
  """``f / (‖f‖₂ + eps)`` over the channel axis; ``[..., C]`` → ``[..., C]``.

  Written so an all-zero channel vector (common after ReLU) has a zero, not NaN, gradient.
  """
  ss = jnp.sum(jnp.square(f), axis=-1, keepdims=True)
  pos = ss > 0
  norm = jnp.where(pos, jnp.sqrt(jnp.where(pos, ss, 1.0)), 0.0)
  return f / (norm + eps)


class LinearHead(nn.Module):
  """LPIPS 1×1 linear layer without bias: ``[N, h, w, C]`` → ``[N, h, w]``.

  The published weights are non-negative (the lpips trainer clamps them); the loaders check this.
  Random init is uniform in [0, 1/C) so a fresh network is also a valid (non-negative) distance.
  """
  channels: int
  precision: Any = None

  @nn.compact
  def __call__(self, d):
    init = lambda key, shape: nn.initializers.uniform(1.0 / self.channels)(key, shape)
    kernel = self.param("kernel", init, (self.channels, 1))
    return jnp.einsum("nhwc,co->nhwo", d, kernel.astype(d.dtype), precision=self.precision)[..., 0]


class LPIPS(nn.Module):
  """LPIPS distance network.

  Attributes:
    net: 'vgg' (VGG16, the usual training loss) or 'alex' (AlexNet, the usual metric).
    precision: conv/einsum precision (see module docstring).
    dtype: compute dtype of the trunk (None → float32 from the params).
  """
  net: str = "vgg"
  precision: Any = None
  dtype: Any = None

  def setup(self):
    cls, chans = _NETS[canonical_net(self.net)]
    self.backbone = cls(precision=self.precision, dtype=self.dtype)
    for k, c in enumerate(chans):
      setattr(self, f"lin{k}", LinearHead(c, precision=self.precision))

  def features(self, x):
    """Trunk taps of scaled images: ``x [N, H, W, 3]`` in [-1, 1] → 5 × ``[N, h_l, w_l, C_l]``."""
    return self.backbone(scale_input(jnp.asarray(x, jnp.float32)))

  def __call__(self, x, y, per_layer=False):
    """LPIPS distance.

    Args:
      x, y: ``[N, H, W, 3]`` (or one image ``[H, W, 3]``) in [-1, 1].
      per_layer: also return the five per-layer terms.

    Returns:
      ``[N]`` float32 distances (scalar for one image); with ``per_layer``, ``(total, [5 × [N]])``.
    """
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    if x.shape != y.shape or x.shape[-1] != 3 or x.ndim not in (3, 4):
      raise ValueError(f"LPIPS expects two [N, H, W, 3] arrays, got {x.shape} and {y.shape}")
    single = x.ndim == 3
    if single:
      x, y = x[None], y[None]
    n = x.shape[0]
    feats = self.features(jnp.concatenate([x, y], axis=0))
    layers = []
    for k, f in enumerate(feats):
      f = normalize_channels(f.astype(jnp.float32))
      d = jnp.square(f[:n] - f[n:])
      layers.append(jnp.mean(getattr(self, f"lin{k}")(d), axis=(1, 2)))
    total = sum(layers)
    if single:
      total, layers = total[0], [v[0] for v in layers]
    return (total, layers) if per_layer else total


def lpips_distance(params, x, y, net="vgg", precision=None):
  """Functional form: ``LPIPS(net).apply({"params": params}, x, y)``; ``[N]`` distances."""
  return LPIPS(net=net, precision=precision).apply({"params": params}, x, y)
