"""Real spherical harmonics colours (degrees 0–3), in the 3DGS / gsplat layout and sign convention.

Coefficients [N, M, C] with M = (degree + 1)² ordered (l, m) = (0,0), (1,−1), (1,0), (1,1), ...;
colour = max(Σ_k c_k·Y_k(dir) + 0.5, 0) with dir the unit vector from the camera centre to the
Gaussian. Degree 0 is a constant: colour = 0.28209479·c_0 + 0.5.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# Normalisation constants of the real spherical harmonics, Y_lm = constant × polynomial.
SH_C0 = 0.5 / math.sqrt(math.pi)
SH_C1 = math.sqrt(3.0 / (4.0 * math.pi))
_C2_XY = 0.5 * math.sqrt(15.0 / math.pi)
_C2_ZZ = 0.25 * math.sqrt(5.0 / math.pi)
_C2_XXYY = 0.25 * math.sqrt(15.0 / math.pi)
_C3_A = 0.25 * math.sqrt(35.0 / (2.0 * math.pi))
_C3_B = 0.5 * math.sqrt(105.0 / math.pi)
_C3_C = 0.25 * math.sqrt(21.0 / (2.0 * math.pi))
_C3_D = 0.25 * math.sqrt(7.0 / math.pi)
_C3_E = 0.25 * math.sqrt(105.0 / math.pi)


def sh_degree_from_coeffs(num_coeffs: int) -> int:
  """Degree d with (d + 1)² = num_coeffs; ValueError if there is none in 0..3."""
  for degree in range(4):
    if (degree + 1) ** 2 == num_coeffs:
      return degree
  raise ValueError(f"SH colours need 1, 4, 9 or 16 coefficients per Gaussian, got {num_coeffs}")


def sh_basis(directions: jax.Array, degree: int) -> jax.Array:
  """Basis values [N, (degree + 1)²] at unit directions [N, 3]."""
  x, y, z = directions[:, 0], directions[:, 1], directions[:, 2]
  basis = [jnp.full_like(x, SH_C0)]
  if degree >= 1:
    basis += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
  if degree >= 2:
    xx, yy, zz = x * x, y * y, z * z
    basis += [_C2_XY * x * y, -_C2_XY * y * z, _C2_ZZ * (2 * zz - xx - yy), -_C2_XY * x * z,
              _C2_XXYY * (xx - yy)]
  if degree >= 3:
    basis += [-_C3_A * y * (3 * xx - yy), _C3_B * x * y * z, -_C3_C * y * (4 * zz - xx - yy),
              _C3_D * z * (2 * zz - 3 * xx - 3 * yy), -_C3_C * x * (4 * zz - xx - yy),
              _C3_E * z * (xx - yy), -_C3_A * x * (xx - 3 * yy)]
  return jnp.stack(basis, axis=-1)


def sh_to_rgb(coeffs: jax.Array, means: jax.Array, camera_center: jax.Array) -> jax.Array:
  """Colours [N, C] from SH coefficients [N, M, C] seen from `camera_center` [3]."""
  degree = sh_degree_from_coeffs(coeffs.shape[1])
  offsets = means - camera_center
  directions = offsets / jnp.linalg.norm(offsets, axis=-1, keepdims=True)
  values = jnp.einsum("nm,nmc->nc", sh_basis(directions, degree), coeffs)
  return jnp.maximum(values + 0.5, 0.0)


def rgb_to_sh0(rgb: jax.Array) -> jax.Array:
  """Degree-0 coefficient [N, C] whose colour is `rgb` [N, C] (inverse of degree-0 `sh_to_rgb`)."""
  return (rgb - 0.5) / SH_C0
