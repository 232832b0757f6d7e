"""Interpolation weights of the learned 16x16 position table (spec §2.3).

The release resizes the table [1, C, 16, 16] to [1, C, H', W'] per sample per temporal tile with
`F.interpolate(mode='bilinear', align_corners=False, antialias=True)`, H' = max(row) + 1 and
W' = max(col) + 1, then gathers it at each token's (row, col). That resize is separable, so the
embedding of a token is

  emb[n] = sum_{r, c} row_w[n, r] * table[r, c, :] * col_w[n, c],

with row_w = W(16, H')[row] and col_w = W(16, W')[col] for the 1-D weight matrix W below. The
data pipeline computes row_w / col_w on the host; the model only contracts them with its table.

Derivation of W(in, out). Output pixel i has its centre at u_i = (i + 1/2) * s in input pixel
units, s = in / out (align_corners=False). Input pixel j (centre j + 1/2) gets the triangle
(bilinear) filter h(x) = max(0, 1 - |x|) evaluated at (j + 1/2 - u_i) / max(s, 1): when
downsampling (s > 1) the filter is widened by s so that it averages every input pixel it covers
(antialiasing, PIL's triangle filter); when upsampling it is plain linear interpolation. Each row
is normalised to sum to one, which also clamps at the borders (an output centre left of the
first input centre takes the first pixel only).

Known divergence: torch 2.13's CPU kernel, given NCHW input and an output width of 1 (with H' not
1 or 16), returns output row 0 in every row; channels-last input (and the separable maths) give
the true resize, which is what this module computes. So the release on CPU differs from us for
tiles one patch wide (16-31 px wide images); all other sizes agree to float32 rounding.
"""
from __future__ import annotations

import functools

import numpy as np

from atoken_jax.config import POS_GRID


@functools.lru_cache(maxsize=512)
def antialiased_bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] float32 row-stochastic W: resize(s) = W @ s (read-only, cached).

  Matches torch `F.interpolate(mode='bilinear', align_corners=False, antialias=True)` along one
  axis. The arithmetic follows the rounding steps of torch's float32 CPU kernel (scale and
  centres rounded to float32, sequential float32 normalisation), so the weights agree with it
  bit for bit rather than only to ~1e-6 (float64 centres drift by up to ~5e-7 at 64 px).
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f"sizes must be >= 1, got in_size={in_size}, out_size={out_size}")
  f32 = np.float32
  scale = f32(in_size) / f32(out_size)
  downsampling = scale >= 1.0
  support = scale if downsampling else f32(1.0)  # triangle radius in input pixels
  inv_scale = f32(1.0 / float(scale)) if downsampling else f32(1.0)
  centres = (float(scale) * (np.arange(out_size, dtype=np.float64) + 0.5)).astype(f32)
  # First input pixel whose centre may be reached; it only offsets j, the filter is 0 outside.
  xmin = np.maximum((centres - support).astype(np.float64) + 0.5, 0.0).astype(np.int64)
  j = np.arange(in_size, dtype=np.int64)[None, :]
  offset = (j - xmin[:, None]).astype(f32) + xmin[:, None].astype(f32)  # = j, as torch forms it
  x = (((offset - centres[:, None]).astype(np.float64) + 0.5) * float(inv_scale)).astype(f32)
  w = np.maximum(f32(0.0), f32(1.0) - np.abs(x))  # [out, in] triangle filter h
  total = np.zeros(out_size, f32)
  for col in range(in_size):  # sequential sum, as torch accumulates
    total += w[:, col]
  w = (w / total[:, None]).astype(f32)
  w.flags.writeable = False
  return w


def position_weights(coords_tile: np.ndarray, grid: int = POS_GRID
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Table weights of the tokens of one sample within one temporal tile.

  Args:
    coords_tile: [n, 4] int (t, x=row, y=col, z); t and z are ignored.
    grid: side of the square position table (16).

  Returns:
    row_w [n, grid], col_w [n, grid] float32, for H' = max(row) + 1 and W' = max(col) + 1 over
    the tokens given (maxima, not counts).
  """
  coords_tile = np.asarray(coords_tile)
  if coords_tile.ndim != 2 or coords_tile.shape[1] != 4 or coords_tile.shape[0] == 0:
    raise ValueError(f"coords_tile must be [n >= 1, 4], got shape {coords_tile.shape}")
  rows, cols = coords_tile[:, 1], coords_tile[:, 2]
  if rows.min() < 0 or cols.min() < 0:
    raise ValueError("position_weights needs non-negative row/col coords")
  wr = antialiased_bilinear_weights(grid, int(rows.max()) + 1)
  wc = antialiased_bilinear_weights(grid, int(cols.max()) + 1)
  return wr[rows], wc[cols]


def gather_position_embedding(table: np.ndarray, row_w: np.ndarray, col_w: np.ndarray
                              ) -> np.ndarray:
  """Reference contraction: table [16, 16, C], row_w / col_w [..., 16] -> [..., C]."""
  return np.einsum("...r,rcd,...c->...d", row_w, table, col_w)
