"""The latent bottleneck: diagonal-Gaussian posterior (So/C) and FSQ (So/D), spec §2.1, §2.7."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Posterior(NamedTuple):
  """Diagonal Gaussian over the latent, float32. mean/logvar [..., C] (mean first in `proj`)."""
  mean: jax.Array
  logvar: jax.Array

  @classmethod
  def from_moments(cls, z: jax.Array) -> "Posterior":
    """z [..., 2C] = proj(features) -> (mean, logvar); no clamping, as the release."""
    z = z.astype(jnp.float32)
    mean, logvar = jnp.split(z, 2, axis=-1)
    return cls(mean, logvar)

  def sample(self, rng: jax.Array) -> jax.Array:
    return self.mean + jnp.exp(0.5 * self.logvar) * jax.random.normal(rng, self.mean.shape)

  def mode(self) -> jax.Array:
    return self.mean

  def kl(self) -> jax.Array:
    """KL(q || N(0, I)) per token, summed over channels: [...]."""
    return 0.5 * jnp.sum(jnp.square(self.mean) + jnp.exp(self.logvar) - 1.0 - self.logvar, -1)


class FSQ:
  """Finite scalar quantisation of `num_codebooks` groups of len(levels) dims.

  With levels [4]*6 and 8 groups (So/D): z [..., 48] -> codes [..., 48] in {-1, -.5, 0, .5} and
  indices [..., 8] in [0, 4096), the first dim of a group least significant (spec §2.7).
  """

  def __init__(self, levels=(4, 4, 4, 4, 4, 4), num_codebooks: int = 8, eps: float = 1e-3):
    self.levels = tuple(int(l) for l in levels)
    self.num_codebooks = num_codebooks
    self.eps = eps
    # float32 arithmetic step by step, as the release computes these constants in torch.
    f32 = np.float32
    lv = np.asarray(self.levels, f32)
    self._half_l = (lv - f32(1)) * f32(1 + eps) / f32(2)
    self._offset = np.where(lv % 2 == 0, f32(0.5), f32(0.0)).astype(f32)
    self._shift = np.arctanh((self._offset / self._half_l).astype(np.float64)).astype(f32)
    self._half_width = (lv // 2)
    self._basis = np.cumprod([1] + list(self.levels[:-1])).astype(np.int64)

  @property
  def dim(self) -> int:
    return len(self.levels) * self.num_codebooks

  @property
  def codebook_size(self) -> int:
    return int(np.prod(self.levels))

  def _grouped(self, z):
    if z.shape[-1] != self.dim:
      raise ValueError(f"FSQ expects {self.dim} channels, got {z.shape[-1]}")
    return z.reshape(*z.shape[:-1], self.num_codebooks, len(self.levels))

  def bound(self, z: jax.Array) -> jax.Array:
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return jnp.tanh(z + f32(self._shift)) * f32(self._half_l) - f32(self._offset)

  def quantize(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z [..., dim] -> (codes [..., dim] float32, indices [..., num_codebooks] int32).

    The rounding is straight-through: d codes / d z is the derivative of `bound`.
    """
    zg = self._grouped(z.astype(jnp.float32))
    bounded = self.bound(zg)
    rounded = bounded + jax.lax.stop_gradient(jnp.round(bounded) - bounded)  # half-to-even
    codes = rounded / jnp.asarray(self._half_width, jnp.float32)
    return codes.reshape(z.shape), self.codes_to_indices(codes)

  def codes_to_indices(self, codes_grouped: jax.Array) -> jax.Array:
    """codes [..., G, d] -> indices [..., G]."""
    hw = jnp.asarray(self._half_width, jnp.float32)
    digits = jnp.round(codes_grouped * hw + hw).astype(jnp.int32)
    return jnp.sum(digits * jnp.asarray(self._basis, jnp.int32), axis=-1).astype(jnp.int32)

  def indices_to_codes(self, indices: jax.Array) -> jax.Array:
    """indices [..., G] -> codes [..., G * d] float32."""
    idx = jnp.asarray(indices, jnp.int32)[..., None]
    digits = (idx // jnp.asarray(self._basis, jnp.int32)) % jnp.asarray(self.levels, jnp.int32)
    hw = jnp.asarray(self._half_width, jnp.float32)
    codes = (digits.astype(jnp.float32) - hw) / hw
    return codes.reshape(*indices.shape[:-1], self.dim)
