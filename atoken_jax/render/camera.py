"""Pinhole cameras in the OpenCV convention (x right, y down, z forward).

A pixel at (row i, col j) is centred at image coordinates (j + 0.5, i + 0.5); a camera-space
point (x, y, z) lands at (fx·x/z + cx, fy·y/z + cy). `world_to_camera` maps homogeneous world
points to camera space.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class Camera:
  """One pinhole camera (or a stack of them, with a leading axis on every array field).

  Fields: `fx, fy, cx, cy` in pixels (scalars, or [V] for a stack); `world_to_camera` [4, 4]
  (or [V, 4, 4]); `width`, `height` in pixels (static: part of the compiled shape); `near`, `far`
  (Gaussians whose centre depth lies outside [near, far] are culled).
  """
  fx: jax.Array
  fy: jax.Array
  cx: jax.Array
  cy: jax.Array
  world_to_camera: jax.Array
  width: int = flax.struct.field(pytree_node=False)
  height: int = flax.struct.field(pytree_node=False)
  near: jax.Array = 0.01
  far: jax.Array = 100.0

  @classmethod
  def from_nerf(cls, transform_matrix, camera_angle_x: float, width: int, height: int,
                near: float = 0.01, far: float = 100.0) -> "Camera":
    """A camera from a NeRF `transforms.json` frame.

    `transform_matrix` is the [4, 4] (or [3, 4]) camera-to-world matrix in the OpenGL/Blender
    convention (x right, y up, z backward). Its Y and Z columns are negated to reach OpenCV and
    the result is inverted to world-to-camera (spec §1.3). `camera_angle_x` is the horizontal
    field of view in radians; pixels are square (fy = fx) and the principal point is the image
    centre.
    """
    c2w = _as_4x4(np.asarray(transform_matrix, np.float64))
    c2w_opencv = c2w * np.array([1.0, -1.0, -1.0, 1.0])[None, :]
    w2c = np.linalg.inv(c2w_opencv)
    focal = 0.5 * width / math.tan(0.5 * float(camera_angle_x))
    return cls(fx=focal, fy=focal, cx=0.5 * width, cy=0.5 * height,
               world_to_camera=jnp.asarray(w2c, jnp.float32), width=int(width),
               height=int(height), near=near, far=far)

  def to_nerf(self) -> np.ndarray:
    """The NeRF camera-to-world [4, 4] matrix (inverse of `from_nerf`), float64 numpy."""
    c2w_opencv = np.linalg.inv(np.asarray(self.world_to_camera, np.float64))
    return c2w_opencv * np.array([1.0, -1.0, -1.0, 1.0])[None, :]

  @property
  def camera_angle_x(self) -> float:
    """Horizontal field of view in radians (for writing `transforms.json`)."""
    return 2.0 * math.atan(0.5 * self.width / float(self.fx))

  @property
  def intrinsics(self) -> jax.Array:
    """The [3, 3] intrinsic matrix K (single camera)."""
    zero, one = jnp.zeros_like(jnp.asarray(self.fx)), jnp.ones_like(jnp.asarray(self.fx))
    return jnp.stack([jnp.stack([self.fx, zero, self.cx]),
                      jnp.stack([zero, self.fy, self.cy]),
                      jnp.stack([zero, zero, one])])

  @property
  def camera_center(self) -> jax.Array:
    """The camera position in world space, [3] (single camera)."""
    rotation = self.world_to_camera[:3, :3]
    return -rotation.T @ self.world_to_camera[:3, 3]

  @property
  def num_views(self) -> int | None:
    """Length of the leading axis for a stack of cameras, None for a single camera."""
    shape = jnp.shape(self.world_to_camera)
    return shape[0] if len(shape) == 3 else None

  def view(self, index: int) -> "Camera":
    """Camera `index` of a stack (see `orbit_cameras`)."""
    if self.num_views is None:
      raise ValueError("view(): this Camera is a single camera, not a stack")
    return jax.tree.map(lambda leaf: leaf[index] if jnp.ndim(leaf) else leaf, self)


def _as_4x4(matrix: np.ndarray) -> np.ndarray:
  if matrix.shape == (3, 4):
    matrix = np.concatenate([matrix, np.array([[0.0, 0.0, 0.0, 1.0]])], axis=0)
  if matrix.shape != (4, 4):
    raise ValueError(f"expected a [4, 4] or [3, 4] matrix, got shape {matrix.shape}")
  return matrix


def look_at(eye: Sequence[float], target: Sequence[float] = (0.0, 0.0, 0.0),
            up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
  """OpenCV world-to-camera [4, 4] for a camera at `eye` looking at `target`.

  `up` is the world direction that appears upward in the image (camera −y). float64 numpy.
  """
  eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
  forward = target - eye
  forward /= np.linalg.norm(forward)
  right = np.cross(forward, up)
  if np.linalg.norm(right) < 1e-9:
    raise ValueError("look_at: `up` is parallel to the viewing direction")
  right /= np.linalg.norm(right)
  down = np.cross(forward, right)
  rotation = np.stack([right, down, forward])
  w2c = np.eye(4)
  w2c[:3, :3] = rotation
  w2c[:3, 3] = -rotation @ eye
  return w2c


def focal_from_fov(fov_deg: float, size: int) -> float:
  """Focal length in pixels for a field of view `fov_deg` (degrees) across `size` pixels."""
  return 0.5 * size / math.tan(0.5 * math.radians(fov_deg))


def orbit_cameras(n: int, radius: float, elevation_deg: float, fov_deg: float, width: int,
                  height: int, *, target: Sequence[float] = (0.0, 0.0, 0.0),
                  up: Sequence[float] = (0.0, 0.0, 1.0), start_azimuth_deg: float = 0.0,
                  near: float = 0.01, far: float = 100.0) -> Camera:
  """`n` cameras evenly spaced in azimuth on a circle around `target`, all looking at it.

  `elevation_deg` is the angle above the plane orthogonal to `up`; `fov_deg` the horizontal field
  of view. Returns one stacked Camera: fx/fy/cx/cy/near/far [n], world_to_camera [n, 4, 4].
  Render one view with `cams.view(i)` or all of them with `jax.vmap`.
  """
  if n < 1:
    raise ValueError(f"orbit_cameras: n must be >= 1, got {n}")
  up_vec = np.asarray(up, np.float64) / np.linalg.norm(up)
  helper = np.array([1.0, 0.0, 0.0]) if abs(up_vec[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
  axis_a = np.cross(up_vec, helper)
  axis_a /= np.linalg.norm(axis_a)
  axis_b = np.cross(up_vec, axis_a)
  elevation = math.radians(elevation_deg)
  matrices = []
  for k in range(n):
    azimuth = math.radians(start_azimuth_deg) + 2.0 * math.pi * k / n
    direction = (math.cos(elevation) * (math.cos(azimuth) * axis_b + math.sin(azimuth) * axis_a)
                 + math.sin(elevation) * up_vec)
    eye = np.asarray(target, np.float64) + radius * direction
    matrices.append(look_at(eye, target, up_vec))
  focal = focal_from_fov(fov_deg, width)
  full = lambda value: jnp.full((n,), value, jnp.float32)
  return Camera(fx=full(focal), fy=full(focal), cx=full(0.5 * width), cy=full(0.5 * height),
                world_to_camera=jnp.asarray(np.stack(matrices), jnp.float32), width=int(width),
                height=int(height), near=full(near), far=full(far))
