"""Pinhole cameras for the 3D packing recipe (spec §1.3): views on a sphere, NeRF conversion.

Convention: OpenCV camera space (x right, y down, z forward, the depth). A camera is a
world-to-camera matrix w2c [4, 4] and a horizontal field of view `fov_x` in radians; square
images. Normalised image coordinates uv in [0, 1]^2 (u along columns, v along rows):

  u = fx * x / z + 0.5,  v = fx * y / z + 0.5,  fx = 0.5 / tan(fov_x / 2),

so pixel (row r, col c) of an S x S image has its centre at uv = ((c + 0.5) / S, (r + 0.5) / S).
NeRF `transforms.json` stores camera-to-world matrices in the OpenGL/Blender convention
(y up, looking along -z): negating their y and z columns gives OpenCV c2w (spec §1.3).
"""
from __future__ import annotations

import numpy as np

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def focal_normalised(fov_x: float) -> float:
  """fx in uv units (image width = 1) of a camera with horizontal field of view fov_x (rad)."""
  return 0.5 / np.tan(0.5 * fov_x)


def look_at(eye: np.ndarray, target: np.ndarray = np.zeros(3),
            up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
  """w2c [4, 4] float64 of an OpenCV camera at `eye` looking at `target` (world z is up)."""
  eye, target = np.asarray(eye, np.float64), np.asarray(target, np.float64)
  forward = target - eye
  forward /= np.linalg.norm(forward)
  if abs(float(np.dot(forward, up))) > 0.999:  # looking straight up or down
    up = np.array([0.0, 1.0, 0.0])
  right = np.cross(forward, up)
  right /= np.linalg.norm(right)
  down = np.cross(forward, right)
  rot = np.stack([right, down, forward])  # rows: camera axes in world coordinates
  w2c = np.eye(4)
  w2c[:3, :3] = rot
  w2c[:3, 3] = -rot @ eye
  return w2c


def sphere_cameras(num_views: int, radius: float = 2.0, fov_deg: float = 40.0
                   ) -> tuple[np.ndarray, np.ndarray]:
  """`num_views` cameras on a Fibonacci sphere, looking at the origin.

  Returns:
    w2c [V, 4, 4] float64, fov_x [V] float64 (radians). At radius 2 and 40 degrees the
    [-0.5, 0.5]^3 cube stays inside every view.
  """
  if num_views < 1:
    raise ValueError(f"num_views must be >= 1, got {num_views}")
  i = np.arange(num_views) + 0.5
  z = 1.0 - 2.0 * i / num_views
  r = np.sqrt(1.0 - z * z)
  phi = i * np.pi * (3.0 - np.sqrt(5.0))  # golden angle
  eyes = radius * np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
  w2c = np.stack([look_at(e) for e in eyes])
  return w2c, np.full(num_views, np.deg2rad(fov_deg))


def project(points: np.ndarray, w2c: np.ndarray, fov_x: float) -> tuple[np.ndarray, np.ndarray]:
  """World points [N, 3] -> (uv [N, 2] normalised, depth z [N]) in one camera."""
  cam = points @ w2c[:3, :3].T + w2c[:3, 3]
  z = cam[:, 2]
  fx = focal_normalised(fov_x)
  with np.errstate(divide="ignore", invalid="ignore"):
    uv = fx * cam[:, :2] / z[:, None] + 0.5
  return uv, z


def unproject(depth: np.ndarray, w2c: np.ndarray, fov_x: float) -> np.ndarray:
  """Depth map [S, S] (z-depth; <= 0 or non-finite = no surface) -> world points [M, 3]."""
  size = depth.shape[0]
  rows, cols = np.nonzero(np.isfinite(depth) & (depth > 0))
  z = depth[rows, cols].astype(np.float64)
  fx = focal_normalised(fov_x)
  x = ((cols + 0.5) / size - 0.5) / fx * z
  y = ((rows + 0.5) / size - 0.5) / fx * z
  cam = np.stack([x, y, z], axis=1)
  rot, trans = w2c[:3, :3], w2c[:3, 3]
  return (cam - trans) @ rot  # R^T (p - t), row-wise


def nerf_c2w_to_w2c(c2w_gl: np.ndarray) -> np.ndarray:
  """NeRF/Blender camera-to-world [4, 4] (OpenGL axes) -> OpenCV world-to-camera [4, 4]."""
  return np.linalg.inv(np.asarray(c2w_gl, np.float64) @ _GL_TO_CV)


def w2c_to_nerf_c2w(w2c: np.ndarray) -> np.ndarray:
  """Inverse of `nerf_c2w_to_w2c`."""
  return np.linalg.inv(np.asarray(w2c, np.float64)) @ _GL_TO_CV
