"""A small CPU z-buffer rasteriser for triangle meshes: RGB + depth renders (numpy only).

Used by the 3D packing recipe (spec §1.3) to render a mesh from views on a sphere. Pixel
(row r, col c) is covered by a triangle when its centre (c + 0.5, r + 0.5) lies inside the
projected triangle (barycentric test, both windings, no culling); the nearest surface wins.
Depth is the camera-space z, interpolated perspective-correctly (1/z is linear on screen), as
are vertex colours. Shading: colour * (ambient + (1 - ambient) * |n . view axis|), a headlight,
so that flat-coloured faces stay distinguishable; `ambient=1` renders unlit albedo.
Background: RGB black, depth -1 (the spec's invalid-depth value).

Work is vectorised over (triangle, pixel-in-bounding-box) candidates, in chunks of at most
`max_candidates`, so memory stays bounded for large meshes.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from data_pipelines.cameras import focal_normalised

_NEAR = 1e-4


def normalize_vertices(vertices: np.ndarray, extent: float = 1.0) -> np.ndarray:
  """[V, 3] -> [V, 3] float64, bounding box centred at 0 with its longest side = `extent`."""
  v = np.asarray(vertices, np.float64)
  lo, hi = v.min(axis=0), v.max(axis=0)
  scale = extent / max(float((hi - lo).max()), 1e-12)
  return (v - (lo + hi) / 2) * scale


def _expand(cmin, rmin, width, height):
  """Ragged (triangle, pixel) candidates: triangle rank [K], col [K], row [K]."""
  counts = width * height
  tri = np.repeat(np.arange(len(counts)), counts)
  first = np.repeat(np.cumsum(counts) - counts, counts)
  off = np.arange(int(counts.sum())) - first
  return tri, cmin[tri] + off % width[tri], rmin[tri] + off // width[tri]


def _plane_coefficients(tx, ty, tz, area):
  """Per triangle, b0, b1 and 1/z as affine functions of the pixel centre (px, py).

  Returns [F, 3, 3]: coef[f, q] = (constant, d/dpx, d/dpy) of q in (b0, b1, 1/z).
  """
  x0, x1, x2 = tx.T
  y0, y1, y2 = ty.T
  b0 = np.stack([x1 * y2 - x2 * y1, y1 - y2, x2 - x1], axis=1) / area[:, None]
  b1 = np.stack([x2 * y0 - x0 * y2, y2 - y0, x0 - x2], axis=1) / area[:, None]
  iz = 1.0 / tz  # [F, 3]
  inv_z = (b0 * (iz[:, 0] - iz[:, 2])[:, None] + b1 * (iz[:, 1] - iz[:, 2])[:, None])
  inv_z[:, 0] += iz[:, 2]
  return np.stack([b0, b1, inv_z], axis=1)


def _evaluate(coef, px, py):
  """coef [..., 3, 3], pixel centres broadcastable -> (b0, b1, b2, 1/z)."""
  b0 = coef[..., 0, 0] + coef[..., 0, 1] * px + coef[..., 0, 2] * py
  b1 = coef[..., 1, 0] + coef[..., 1, 1] * px + coef[..., 1, 2] * py
  inv_z = coef[..., 2, 0] + coef[..., 2, 1] * px + coef[..., 2, 2] * py
  return b0, b1, 1.0 - b0 - b1, inv_z


def _inside(b0, b1, b2, inv_z):
  return (b0 >= -1e-9) & (b1 >= -1e-9) & (b2 >= -1e-9) & (inv_z > 0)


def render_mesh(vertices: np.ndarray, faces: np.ndarray, w2c: np.ndarray, fov_x: float,
                size: int = 256, vertex_colors: Optional[np.ndarray] = None,
                face_colors: Optional[np.ndarray] = None, ambient: float = 0.4,
                max_candidates: int = 1 << 20, large_bbox_px: int = 1024
                ) -> tuple[np.ndarray, np.ndarray]:
  """Renders one view.

  Args:
    vertices: [V, 3] world positions. faces: [F, 3] vertex indices.
    w2c: [4, 4] OpenCV world-to-camera. fov_x: horizontal field of view (radians).
    size: the image is size x size pixels.
    vertex_colors: [V, 3] in [0, 1], or face_colors: [F, 3] in [0, 1]; neither = grey.
    ambient: shading floor in [0, 1].
    max_candidates: (triangle, pixel) pairs tested per chunk of small triangles.
    large_bbox_px: triangles whose bounding box covers more pixels are drawn one by one.

  Returns:
    rgb [size, size, 3] uint8, depth [size, size] float32 (camera z; -1 where empty).
  """
  v = np.asarray(vertices, np.float64)
  f = np.asarray(faces, np.int64).reshape(-1, 3)
  cam = v @ w2c[:3, :3].T + w2c[:3, 3]
  fpx = focal_normalised(fov_x) * size
  z = cam[:, 2]
  with np.errstate(divide="ignore", invalid="ignore"):
    sx = fpx * cam[:, 0] / z + size / 2  # screen x (columns), pixel units
    sy = fpx * cam[:, 1] / z + size / 2  # screen y (rows)
  tx, ty, tz = sx[f], sy[f], z[f]  # [F, 3] each
  keep = (tz > _NEAR).all(axis=1)
  area = ((tx[:, 1] - tx[:, 0]) * (ty[:, 2] - ty[:, 0])
          - (tx[:, 2] - tx[:, 0]) * (ty[:, 1] - ty[:, 0]))  # twice the signed screen area
  keep &= np.abs(area) > 1e-12
  ids = np.flatnonzero(keep)
  tx, ty, tz, area = tx[ids], ty[ids], tz[ids], area[ids]
  cmin = np.maximum(np.ceil(tx.min(axis=1) - 0.5), 0).astype(np.int64)
  cmax = np.minimum(np.floor(tx.max(axis=1) - 0.5), size - 1).astype(np.int64)
  rmin = np.maximum(np.ceil(ty.min(axis=1) - 0.5), 0).astype(np.int64)
  rmax = np.minimum(np.floor(ty.max(axis=1) - 0.5), size - 1).astype(np.int64)
  width, height = np.maximum(cmax - cmin + 1, 0), np.maximum(rmax - rmin + 1, 0)
  coef = _plane_coefficients(tx, ty, tz, area)

  zinv = np.zeros((size, size))  # 1 / depth of the nearest surface so far; 0 = empty
  winner = np.full((size, size), -1, np.int64)  # rank into `ids`
  counts = width * height
  large = np.flatnonzero(counts > large_bbox_px)
  for k in large:  # big triangles: one dense bounding-box tile each
    rows = np.arange(rmin[k], rmax[k] + 1)[:, None] + 0.5
    cols = np.arange(cmin[k], cmax[k] + 1)[None, :] + 0.5
    b0, b1, b2, inv_z = _evaluate(coef[k], cols, rows)
    tile = np.s_[rmin[k]:rmax[k] + 1, cmin[k]:cmax[k] + 1]
    better = _inside(b0, b1, b2, inv_z) & (inv_z > zinv[tile])
    zinv[tile] = np.where(better, inv_z, zinv[tile])
    winner[tile] = np.where(better, k, winner[tile])
  small = np.flatnonzero((counts > 0) & (counts <= large_bbox_px))
  ends = np.searchsorted(np.cumsum(counts[small]), np.arange(max_candidates,
                         counts[small].sum() + max_candidates, max_candidates), side="right")
  for lo, hi in zip(np.concatenate([[0], ends[:-1]]), ends):
    sel = small[lo:hi]
    if len(sel) == 0:
      continue
    k, col, row = _expand(cmin[sel], rmin[sel], width[sel], height[sel])
    t = sel[k]
    b0, b1, b2, inv_z = _evaluate(coef[t], col + 0.5, row + 0.5)
    inside = _inside(b0, b1, b2, inv_z)
    t, row, col, inv_z = t[inside], row[inside], col[inside], inv_z[inside]
    flat = zinv.reshape(-1)
    pix = row * size + col
    np.maximum.at(flat, pix, inv_z)
    won = inv_z == flat[pix]
    winner.reshape(-1)[pix[won]] = t[won]

  hit_r, hit_c = np.nonzero(winner >= 0)
  k = winner[hit_r, hit_c]
  b0, b1, b2, inv_z = _evaluate(coef[k], hit_c + 0.5, hit_r + 0.5)
  tri = f[ids[k]]  # [H, 3] vertex ids
  if vertex_colors is not None:
    wz = np.stack([b0, b1, b2], axis=1) / tz[k]  # perspective-correct weights
    vc = np.asarray(vertex_colors, np.float64)[tri]
    color = (wz[:, :, None] * vc).sum(axis=1) / wz.sum(axis=1, keepdims=True)
  elif face_colors is not None:
    color = np.asarray(face_colors, np.float64)[ids[k]]
  else:
    color = np.full((len(k), 3), 0.7)
  if ambient < 1.0:
    corners = v[tri]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    facing = np.abs(normal @ w2c[2, :3])  # |n . camera forward|
    color = color * (ambient + (1.0 - ambient) * facing)[:, None]
  rgb = np.zeros((size, size, 3), np.uint8)
  rgb[hit_r, hit_c] = np.clip(np.round(color * 255.0), 0, 255).astype(np.uint8)
  depth = np.full((size, size), -1.0, np.float32)
  depth[hit_r, hit_c] = 1.0 / zinv[hit_r, hit_c]
  return rgb, depth
