"""4D rotary position embedding (spec §2.4).

The head dim D is split in four equal parts [t | x | y | z]; each part holds D/8 complex
frequencies 10000^(-i/D), i = 0..D/8-1 (the exponent divides by the full head dim, as the
release does). Channels (2j, 2j+1) form one complex number (interleaved pairs). The whole head
is rotated; computed in float32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def rope_angles(positions: jax.Array, head_dim: int, theta: float = 10000.0) -> jax.Array:
  """positions [..., 4] (t, x, y, z) -> angles [..., head_dim // 2] in float32."""
  if head_dim % 8:
    raise ValueError(f"4D RoPE needs head_dim % 8 == 0, got {head_dim}")
  n = head_dim // 8
  freqs = theta ** (-jnp.arange(n, dtype=jnp.float32) / head_dim)  # [n]
  angles = positions.astype(jnp.float32)[..., :, None] * freqs  # [..., 4, n]
  return angles.reshape(*positions.shape[:-1], 4 * n)


def apply_rope(x: jax.Array, angles: jax.Array) -> jax.Array:
  """Rotates x [B, L, H, D] by angles [B, L, D/2]; returns x's dtype."""
  y = x.astype(jnp.float32)
  re, im = y[..., 0::2], y[..., 1::2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  out = jnp.stack([re * cos - im * sin, re * sin + im * cos], axis=-1)
  return out.reshape(x.shape).astype(x.dtype)
