"""VGG16 convolutional trunk in torchvision's layer layout, returning the LPIPS taps.

torchvision's ``vgg16().features`` is 13 3×3 convolutions (padding 1, bias) with ReLUs and five
2×2/2 max-pools. LPIPS reads the activations after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3
(``features`` indices 3, 8, 15, 22, 29); the final pool is never used.
"""

from typing import Any, Sequence

import flax.linen as nn

# (block, convs, channels)
_VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))

VGG16_CONVS = tuple(f"conv{b}_{i}" for b, n, _ in _VGG16_BLOCKS for i in range(1, n + 1))
"""Flax module names, in order: conv1_1, conv1_2, conv2_1, …, conv5_3."""

VGG16_TORCHVISION_INDEX = dict(zip(VGG16_CONVS, (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)))
"""Flax conv name → index ``i`` of ``features.{i}.weight`` in a torchvision state dict."""

VGG16_TAP_CHANNELS = (64, 128, 256, 512, 512)


class VGG16Features(nn.Module):
  """VGG16 trunk; ``__call__(x [N, H, W, 3]) -> 5 taps [N, H/2^k, W/2^k, C_k]``, k = 0..4.

  Channel widths of the taps: 64, 128, 256, 512, 512. Inputs are whatever the caller normalises
  to (LPIPS feeds its scaled images).
  """
  precision: Any = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x) -> Sequence:
    taps = []
    for block, n, ch in _VGG16_BLOCKS:
      if block > 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
      for i in range(1, n + 1):
        x = nn.Conv(ch, (3, 3), padding=((1, 1), (1, 1)), precision=self.precision,
                    dtype=self.dtype, name=f"conv{block}_{i}")(x)
        x = nn.relu(x)
      taps.append(x)
    return taps
