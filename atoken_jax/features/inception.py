"""The FID InceptionV3 (TensorFlow's 2015-12-05 graph, as pytorch-fid ports it) in Flax linen.

This is the network every published FID is computed with: torchvision's InceptionV3 layout with
pytorch-fid's four patches, which reproduce the TF graph:

* ``FIDInceptionA`` / ``FIDInceptionC`` / ``FIDInceptionE_1``: the pool branch averages 3×3
  windows *without* counting the zero padding (TF's ``avg_pool`` semantics);
* ``FIDInceptionE_2`` (``Mixed_7c``): the pool branch is a 3×3 *max* pool.

Inputs follow pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)``: an image
in [0, 1] is resized to 299×299 by PyTorch's bilinear interpolation (``align_corners=False``, no
antialias) and mapped to [-1, 1] by ``2x − 1``. :meth:`FIDInceptionV3.__call__` takes this
project's [-1, 1] images and converts them first (``(x + 1) / 2``).

Outputs (pytorch-fid's block indices): ``0`` first max-pool ``[N, 73, 73, 64]``, ``1`` second
max-pool ``[N, 35, 35, 192]``, ``2`` before the aux classifier ``[N, 17, 17, 768]``, ``3`` the
final average pool ``[N, 2048]`` — the FID features.

Module and parameter names are torchvision's (``Mixed_5b/branch1x1/conv/kernel``, ``…/bn/scale``),
so :mod:`atoken_jax.interop.pytorch_fid` maps a state dict by renaming leaves only. All
parameters — BatchNorm statistics included — live in the ``params`` collection: the network is
frozen, evaluation-mode only (BatchNorm ε = 0.001).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from atoken_jax.features.resize import resize_bilinear

INPUT_SIZE = 299
BN_EPS = 1e-3
FEATURE_DIM = 2048
BLOCK_DIMS = {0: 64, 1: 192, 2: 768, 3: 2048}


class BatchNormEval(nn.Module):
  """Inference BatchNorm ``(x − mean)·scale/√(var + ε) + bias`` over the last axis."""
  eps: float = BN_EPS
  use_scale: bool = True

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    mean = self.param("mean", nn.initializers.zeros, (c,))
    var = self.param("var", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    mult = jax.lax.rsqrt(var + self.eps)
    if self.use_scale:
      mult = mult * self.param("scale", nn.initializers.ones, (c,))
    return (x - mean) * mult + bias


class BasicConv2d(nn.Module):
  """Conv (no bias) → BatchNorm → ReLU; ``padding`` is symmetric ``(rows, cols)``."""
  features: int
  kernel: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: tuple[int, int] = (0, 0)
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, self.strides, padding=((ph, ph), (pw, pw)),
                use_bias=False, precision=self.precision, name="conv")(x)
    return nn.relu(BatchNormEval(name="bn")(x))


def _avg_pool_3x3(x):
  """3×3/1 average pool, padding 1, padded zeros not counted (TF semantics)."""
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


class FIDInceptionA(nn.Module):
  """Mixed_5b/c/d: ``[N, 35, 35, C] → [N, 35, 35, 224 + pool_features]``."""
  pool_features: int
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = lambda *a, **k: BasicConv2d(*a, precision=self.precision, **k)
    b1 = conv(64, (1, 1), name="branch1x1")(x)
    b5 = conv(48, (1, 1), name="branch5x5_1")(x)
    b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (grid reduction): ``[N, 35, 35, 288] → [N, 17, 17, 768]``."""
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = lambda *a, **k: BasicConv2d(*a, precision=self.precision, **k)
    b3 = conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
    bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionC(nn.Module):
  """Mixed_6b/c/d/e (factorised 7×7): ``[N, 17, 17, 768] → [N, 17, 17, 768]``."""
  channels_7x7: int
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = lambda *a, **k: BasicConv2d(*a, precision=self.precision, **k)
    c7 = self.channels_7x7
    b1 = conv(192, (1, 1), name="branch1x1")(x)
    b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
    b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (grid reduction): ``[N, 17, 17, 768] → [N, 8, 8, 1280]``."""
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = lambda *a, **k: BasicConv2d(*a, precision=self.precision, **k)
    b3 = conv(192, (1, 1), name="branch3x3_1")(x)
    b3 = conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
    b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionE(nn.Module):
  """Mixed_7b (``pool="avg"``, FIDInceptionE_1) / Mixed_7c (``pool="max"``, FIDInceptionE_2):
  ``[N, 8, 8, C] → [N, 8, 8, 2048]``."""
  pool: str = "avg"
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = lambda *a, **k: BasicConv2d(*a, precision=self.precision, **k)
    b1 = conv(320, (1, 1), name="branch1x1")(x)
    b3 = conv(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
    bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
    if self.pool == "avg":
      pooled = _avg_pool_3x3(x)
    else:
      pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    bp = conv(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """pytorch-fid's ``InceptionV3`` (``use_fid_inception=True``) without the classifier.

  Attributes:
    precision: conv precision (pass ``jax.lax.Precision.HIGHEST`` on TPU/GPU for metrics).
  """
  precision: Any = None

  def prepare(self, x):
    """[-1, 1] images ``[N, H, W, 3]`` → the network's input ``[N, 299, 299, 3]`` in [-1, 1]."""
    x = (jnp.asarray(x, jnp.float32) + 1.0) / 2.0
    x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE), "half_pixel", precision=self.precision)
    return 2.0 * x - 1.0

  @nn.compact
  def __call__(self, x, blocks: Sequence[int] = (3,)) -> dict[int, jax.Array]:
    """Images ``[N, H, W, 3]`` in [-1, 1] (any size) → ``{block: features}`` (see module doc)."""
    blocks = tuple(sorted(set(blocks)))
    if not blocks or blocks[0] < 0 or blocks[-1] > 3:
      raise ValueError(f"InceptionV3 blocks must be in 0..3, got {blocks}")
    conv = lambda *a, **k: BasicConv2d(*a, precision=self.precision, **k)
    p = dict(precision=self.precision)
    out = {}
    x = self.prepare(x)
    x = conv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
    x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = out[0] = _max_pool_3x3_s2(x)
    if blocks[-1] >= 1:
      x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
      x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
      x = out[1] = _max_pool_3x3_s2(x)
    if blocks[-1] >= 2:
      x = FIDInceptionA(32, **p, name="Mixed_5b")(x)
      x = FIDInceptionA(64, **p, name="Mixed_5c")(x)
      x = FIDInceptionA(64, **p, name="Mixed_5d")(x)
      x = InceptionB(**p, name="Mixed_6a")(x)
      for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        x = FIDInceptionC(c7, **p, name=name)(x)
      out[2] = x
    if blocks[-1] >= 3:
      x = InceptionD(**p, name="Mixed_7a")(x)
      x = FIDInceptionE("avg", **p, name="Mixed_7b")(x)
      x = FIDInceptionE("max", **p, name="Mixed_7c")(x)
      out[3] = jnp.mean(x, axis=(1, 2))
    return {b: out[b] for b in blocks}


def param_shapes(blocks: Sequence[int] = (3,)) -> dict:
  """Nested ``{name: shape}`` of the parameters the given blocks need (no compute)."""
  tree = jax.eval_shape(lambda: FIDInceptionV3().init(
      jax.random.key(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3)), blocks))["params"]
  return jax.tree.map(lambda s: tuple(s.shape), tree)


def random_params(seed: int = 0, blocks: Sequence[int] = (3,)) -> dict:
  """Random float32 numpy parameters for tests and smoke runs (drawn with numpy: fast).

  He-normal conv kernels (activations keep their scale through the 94 convolutions); BatchNorm
  statistics and affine terms drawn near identity, so every leaf is exercised by a parity test.
  """
  rng = np.random.default_rng(seed)

  def draw(path, shape):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    if name == "var":
      return rng.uniform(0.5, 1.5, shape)
    if name == "scale":
      return rng.uniform(0.8, 1.2, shape)
    return rng.uniform(-0.1, 0.1, shape)  # mean, bias

  return jax.tree_util.tree_map_with_path(
      lambda p, s: draw(p, s).astype(np.float32), param_shapes(blocks),
      is_leaf=lambda s: isinstance(s, tuple))
