"""AlexNet convolutional trunk in torchvision's layer layout, returning the LPIPS taps.

torchvision's ``alexnet().features``: conv 11×11/4 (pad 2, 64) · ReLU · maxpool 3/2 · conv 5×5
(pad 2, 192) · ReLU · maxpool 3/2 · conv 3×3 (pad 1, 384) · ReLU · conv 3×3 (256) · ReLU ·
conv 3×3 (256) · ReLU · maxpool 3/2. LPIPS reads relu1..relu5 (``features`` indices 1, 4, 7, 9,
11); the final pool is never used. Pools are unpadded and floor-sized, as in PyTorch.
"""

from typing import Any, Sequence

import flax.linen as nn

# (name, channels, kernel, stride, padding, max-pool before this conv)
_ALEXNET_CONVS = (
    ("conv1", 64, 11, 4, 2, False),
    ("conv2", 192, 5, 1, 2, True),
    ("conv3", 384, 3, 1, 1, True),
    ("conv4", 256, 3, 1, 1, False),
    ("conv5", 256, 3, 1, 1, False),
)

ALEXNET_CONVS = tuple(c[0] for c in _ALEXNET_CONVS)
ALEXNET_TORCHVISION_INDEX = dict(zip(ALEXNET_CONVS, (0, 3, 6, 8, 10)))
"""Flax conv name → index ``i`` of ``features.{i}.weight`` in a torchvision state dict."""

ALEXNET_TAP_CHANNELS = (64, 192, 384, 256, 256)


class AlexNetFeatures(nn.Module):
  """AlexNet trunk; ``__call__(x [N, H, W, 3]) -> 5 taps [N, h_k, w_k, C_k]``.

  For H = 64: spatial sizes 15, 7, 3, 3, 3; channels 64, 192, 384, 256, 256.
  """
  precision: Any = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x) -> Sequence:
    taps = []
    for name, ch, k, s, p, pool in _ALEXNET_CONVS:
      if pool:
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
      x = nn.Conv(ch, (k, k), strides=(s, s), padding=((p, p), (p, p)), precision=self.precision,
                  dtype=self.dtype, name=name)(x)
      x = nn.relu(x)
      taps.append(x)
    return taps
