"""3D Gaussians from the Gaussian decoder's raw output (spec §2.9; TRELLIS `Gaussian`, sh 0).

The decoder emits `14 * G` numbers per voxel (G = 32 Gaussians), in five groups, each laid out
Gaussian-major (column = start + g * width + j):

  _xyz [0, 3G) | _features_dc [3G, 6G) | _scaling [6G, 9G) | _rotation [9G, 13G) |
  _opacity [13G, 14G)

`activate` turns them into world-space Gaussians, flattened voxel-major (row = n * G + g):
  xyz      = aabb_min + aabb_size * ((voxel + 0.5) / R
                                     + tanh(lr * raw_xyz + perturb[g]) * vs / (2R))
  scale    = sqrt(softplus(lr * raw_s + softplus^-1(scaling_bias))^2 + min_kernel_size^2)
  rotation = normalize(lr * raw_r + [1, 0, 0, 0])          (unit quaternion, w x y z)
  opacity  = sigmoid(lr * raw_a + logit(opacity_bias))
  sh_dc    = lr * raw_dc                                     (SH degree-0 coefficients)
with R the grid resolution (64), vs the voxel size (1.5) and lr each group's multiplier.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from atoken_jax import config as config_lib

# (name, numbers per Gaussian) in output order.
GROUPS = (("xyz", 3), ("features_dc", 3), ("scaling", 3), ("rotation", 4), ("opacity", 1))


class Gaussians(NamedTuple):
  """Activated Gaussians; leading dims [..., M] with M = voxels * G, voxel-major.

  xyz [..., M, 3] world positions; scale [..., M, 3]; rotation [..., M, 4] unit quaternions
  (w, x, y, z); opacity [..., M]; sh_dc [..., M, 3] degree-0 SH colour coefficients.
  """
  xyz: jax.Array
  scale: jax.Array
  rotation: jax.Array
  opacity: jax.Array
  sh_dc: jax.Array


def radical_inverse(base: int, n: int) -> float:
  """Van der Corput radical inverse of the integer n in `base` (digits mirrored about the point)."""
  val, inv = 0.0, 1.0 / base
  f = inv
  while n > 0:
    val += (n % base) * f
    n //= base
    f *= inv
  return val


def hammersley(dim: int, n: int, num_samples: int) -> list[float]:
  """The n-th of `num_samples` Hammersley points in `dim` dims: [n/num, phi_2(n), phi_3(n), ...]."""
  primes = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53)
  return [n / num_samples] + [radical_inverse(primes[d], n) for d in range(dim - 1)]


def offset_perturbation(num_gaussians: int = 32, voxel_size: float = 1.5) -> np.ndarray:
  """[G, 3] float32 atanh((hammersley(3, g, G) * 2 - 1) / voxel_size): the release's stored
  buffer `offset_perturbation`, bit for bit (float32 steps in its order, then a correctly rounded
  atanh, which is what torch's float32 atanh gives on these points)."""
  pts = np.asarray([hammersley(3, g, num_gaussians) for g in range(num_gaussians)], np.float32)
  pts = (pts * np.float32(2) - np.float32(1)) / np.float32(voxel_size)
  return np.arctanh(pts.astype(np.float64)).astype(np.float32)


def group_slices(cfg: config_lib.GaussianDecoderConfig) -> dict[str, tuple[int, int, int]]:
  """name -> (start, stop, numbers per Gaussian) of each group in the raw output."""
  out, start = {}, 0
  for name, k in GROUPS:
    out[name] = (start, start + cfg.num_gaussians * k, k)
    start += cfg.num_gaussians * k
  return out


def split_raw(raw: jax.Array, cfg: config_lib.GaussianDecoderConfig) -> dict[str, jax.Array]:
  """raw [..., N, 14G] -> {group: [..., N, G, k]}, each multiplied by its lr, in float32."""
  if raw.shape[-1] != cfg.out_dim:
    raise ValueError(f"raw output must have {cfg.out_dim} channels, got {raw.shape[-1]}")
  raw = raw.astype(jnp.float32)
  lr = dict(xyz=cfg.lr_xyz, features_dc=cfg.lr_features_dc, scaling=cfg.lr_scaling,
            rotation=cfg.lr_rotation, opacity=cfg.lr_opacity)
  return {name: raw[..., a:b].reshape(*raw.shape[:-1], cfg.num_gaussians, k) * lr[name]
          for name, (a, b, k) in group_slices(cfg).items()}


def _flat(x: jax.Array) -> jax.Array:
  """[..., N, G, k] -> [..., N * G, k] (voxel-major)."""
  return x.reshape(*x.shape[:-3], x.shape[-3] * x.shape[-2], x.shape[-1])


def activate(raw: jax.Array, coords: jax.Array, cfg: config_lib.GaussianDecoderConfig,
             perturbation: jax.Array | None = None) -> Gaussians:
  """raw [..., N, 14G], integer voxel coords [..., N, 3] -> `Gaussians` with M = N * G rows.

  `perturbation` [G, 3]: the stored `offset_perturbation` (defaults to the recomputed one).
  """
  if perturbation is None:
    perturbation = offset_perturbation(cfg.num_gaussians, cfg.voxel_size)
  g = split_raw(raw, cfg)
  f32 = jnp.float32
  res = cfg.resolution
  centre = (coords.astype(f32) + 0.5) / res  # [..., N, 3] in [0, 1]
  offset = jnp.tanh(g["xyz"] + jnp.asarray(perturbation, f32)) * (0.5 * cfg.voxel_size / res)
  xyz01 = centre[..., None, :] + offset  # [..., N, G, 3]
  aabb = jnp.asarray(cfg.aabb, f32)
  xyz = xyz01 * aabb[3:] + aabb[:3]

  sb = np.float32(cfg.scaling_bias)
  scale_bias = sb + np.log(-np.expm1(-sb))  # softplus^-1, as TRELLIS computes it in float32
  scale = jnp.sqrt(jnp.square(jax.nn.softplus(g["scaling"] + scale_bias))
                   + f32(cfg.min_kernel_size) ** 2)

  rot = g["rotation"] + jnp.asarray([1.0, 0.0, 0.0, 0.0], f32)
  rot = rot / jnp.maximum(jnp.linalg.norm(rot, axis=-1, keepdims=True), 1e-12)

  ob = np.float32(cfg.opacity_bias)
  opacity = jax.nn.sigmoid(g["opacity"] + np.log(ob / (np.float32(1) - ob)))

  return Gaussians(xyz=_flat(xyz), scale=_flat(scale), rotation=_flat(rot),
                   opacity=_flat(opacity)[..., 0], sh_dc=_flat(g["features_dc"]))
