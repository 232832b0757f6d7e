"""I3D (Carreira & Zisserman 2017, Inception-v1 inflated to 3D), the FVD feature network, in Flax.

The layout is DeepMind's kinetics-i3d RGB stream, the graph behind TF-Hub's
``deepmind/i3d-kinetics-400/1`` that the original FVD code (Unterthiner et al. 2018) embeds videos
with: TF "SAME" padding everywhere, Unit3D = conv (no bias) → BatchNorm without scale
(Sonnet v1, ε = 0.001) → ReLU, nine Inception modules, average pool (2, 7, 7) then a 1×1×1
classifier whose outputs are averaged over time.

FVD embeds a clip ``[B, T, H, W, 3]`` in [-1, 1] by resizing each frame to 224×224 with TF1's
``resize_bilinear`` (no half-pixel centres) and taking the 400 Kinetics **logits** (time-averaged,
before the softmax). :class:`I3D` also returns the 1024-d pooled features.

Deviation, for small inputs only: the final pool window is ``min((2, 7, 7), grid)`` so clips
smaller than 16×224×224 (e.g. in CPU tests) still produce features; at the standard size it is
exactly (2, 7, 7).

Parameter names follow kinetics-i3d, with "/" joined by "_" inside a module
(``Mixed_3b/Branch_1_Conv3d_0b_3x3/conv/kernel`` ``[3, 3, 3, 96, 128]``, ``…/bn/{bias, mean,
var}``); BatchNorm statistics are ``params`` too: the network is frozen, evaluation only.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from atoken_jax.features.inception import BatchNormEval
from atoken_jax.features.resize import resize_bilinear

INPUT_SIZE = 224
NUM_CLASSES = 400
POOL_DIM = 1024
# (name, [b0 1x1, b1 1x1, b1 3x3, b2 1x1, b2 3x3, b3 1x1 after the 3x3x3 max pool])
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class Unit3D(nn.Module):
  """Conv3d ('SAME') → [BatchNorm, no scale] → [ReLU]: ``[B, T, H, W, C] → [B, T', H', W', F]``."""
  features: int
  kernel: tuple[int, int, int] = (1, 1, 1)
  strides: tuple[int, int, int] = (1, 1, 1)
  batch_norm: bool = True
  relu: bool = True
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, self.kernel, self.strides, padding="SAME",
                use_bias=not self.batch_norm, precision=self.precision, name="conv")(x)
    if self.batch_norm:
      x = BatchNormEval(use_scale=False, name="bn")(x)
    return nn.relu(x) if self.relu else x


class InceptionModule3D(nn.Module):
  """Four parallel branches concatenated: ``[B, T, H, W, C] → [B, T, H, W, Σ]``."""
  channels: tuple[int, ...]
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    c, p = self.channels, self.precision
    b0 = Unit3D(c[0], precision=p, name="Branch_0_Conv3d_0a_1x1")(x)
    b1 = Unit3D(c[1], precision=p, name="Branch_1_Conv3d_0a_1x1")(x)
    b1 = Unit3D(c[2], (3, 3, 3), precision=p, name="Branch_1_Conv3d_0b_3x3")(b1)
    b2 = Unit3D(c[3], precision=p, name="Branch_2_Conv3d_0a_1x1")(x)
    b2 = Unit3D(c[4], (3, 3, 3), precision=p, name="Branch_2_Conv3d_0b_3x3")(b2)
    b3 = nn.max_pool(x, (3, 3, 3), (1, 1, 1), padding="SAME")
    b3 = Unit3D(c[5], precision=p, name="Branch_3_Conv3d_0b_1x1")(b3)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class I3D(nn.Module):
  """kinetics-i3d RGB I3D.

  Attributes:
    num_classes: classifier outputs (400 for Kinetics-400).
    resize: resize frames to 224×224 first, as FVD does.
    resize_mode: "tf1" (the original FVD's `tf.image.resize_bilinear`) or "half_pixel"
      (PyTorch's `F.interpolate(align_corners=False)`, used by PyTorch FVD ports).
    precision: conv precision (``jax.lax.Precision.HIGHEST`` on TPU/GPU for metrics).
  """
  num_classes: int = NUM_CLASSES
  resize: bool = True
  resize_mode: str = "tf1"
  precision: Any = None

  @nn.compact
  def __call__(self, video) -> dict[str, jax.Array]:
    """``video [B, T, H, W, 3]`` in [-1, 1] → ``{"logits": [B, 400], "pool": [B, 1024]}``.

    "logits" are the FVD features; "pool" is the mean of the pooled Mixed_5c activations.
    """
    p = self.precision
    x = jnp.asarray(video, jnp.float32)
    if x.ndim != 5 or x.shape[-1] != 3:
      raise ValueError(f"I3D takes videos [B, T, H, W, 3], got shape {x.shape}")
    if self.resize:
      x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE), self.resize_mode, precision=p)
    x = Unit3D(64, (7, 7, 7), (2, 2, 2), precision=p, name="Conv3d_1a_7x7")(x)
    x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), padding="SAME")  # MaxPool3d_2a_3x3
    x = Unit3D(64, precision=p, name="Conv3d_2b_1x1")(x)
    x = Unit3D(192, (3, 3, 3), precision=p, name="Conv3d_2c_3x3")(x)
    x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), padding="SAME")  # MaxPool3d_3a_3x3
    for name in ("Mixed_3b", "Mixed_3c"):
      x = InceptionModule3D(_MIXED[name], precision=p, name=name)(x)
    x = nn.max_pool(x, (3, 3, 3), (2, 2, 2), padding="SAME")  # MaxPool3d_4a_3x3
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
      x = InceptionModule3D(_MIXED[name], precision=p, name=name)(x)
    x = nn.max_pool(x, (2, 2, 2), (2, 2, 2), padding="SAME")  # MaxPool3d_5a_2x2
    for name in ("Mixed_5b", "Mixed_5c"):
      x = InceptionModule3D(_MIXED[name], precision=p, name=name)(x)
    window = tuple(min(w, s) for w, s in zip((2, 7, 7), x.shape[1:4]))
    x = nn.avg_pool(x, window, (1, 1, 1), padding="VALID")  # [B, t, h, w, 1024]
    logits = Unit3D(self.num_classes, batch_norm=False, relu=False, precision=p,
                    name="Logits_Conv3d_0c_1x1")(x)
    # kinetics-i3d squeezes h = w = 1 (224 inputs) and averages over time; mean over all three
    # axes is the same there and defined for any size.
    return {"logits": jnp.mean(logits, axis=(1, 2, 3)), "pool": jnp.mean(x, axis=(1, 2, 3))}


def param_shapes(num_classes: int = NUM_CLASSES) -> dict:
  """Nested ``{name: shape}`` of the parameters (no compute)."""
  tree = jax.eval_shape(lambda: I3D(num_classes, resize=False).init(
      jax.random.key(0), jnp.zeros((1, 16, 32, 32, 3))))["params"]
  return jax.tree.map(lambda s: tuple(s.shape), tree)


def random_params(seed: int = 0, num_classes: int = NUM_CLASSES) -> dict:
  """Random float32 numpy parameters (He-normal kernels, near-identity BatchNorm statistics)."""
  rng = np.random.default_rng(seed)

  def draw(path, shape):
    name = path[-1].key
    if name == "kernel":
      return rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[:-1])))
    if name == "var":
      return rng.uniform(0.5, 1.5, shape)
    return rng.uniform(-0.1, 0.1, shape)  # mean, bias

  return jax.tree_util.tree_map_with_path(
      lambda p, s: draw(p, s).astype(np.float32), param_shapes(num_classes),
      is_leaf=lambda s: isinstance(s, tuple))
