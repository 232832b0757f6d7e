"""EWA projection of 3D Gaussians to screen-space 2D Gaussians (gsplat conventions).

Per Gaussian: Σ = R S Sᵀ Rᵀ from scale and unit quaternion (w, x, y, z); camera-space mean and
covariance through `world_to_camera`; the perspective Jacobian J (with gsplat's clamp of x/z, y/z
to 1.3× the view frustum); Σ2d = J Σcam Jᵀ; Σ' = Σ2d + filter_2d·I. `mip=True` multiplies the
opacity by √(det Σ2d / det Σ'). Gaussians whose centre depth lies outside [near, far], whose Σ'
is degenerate, or whose opacity cannot reach α = 1/255 are marked invisible.
"""
from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

from atoken_jax.render.camera import Camera

ALPHA_MIN = 1.0 / 255.0
# Extra room on the squared footprint radius so that float rounding never culls a pixel whose α
# is ≥ 1/255 (the tiled image must equal the dense one).
_RADIUS_SQ_MARGIN = 1e-3
_FRUSTUM_CLAMP = 1.3


@flax.struct.dataclass
class ProjectedGaussians:
  """Screen-space Gaussians, N of them.

  means2d [N, 2] pixel coords (x = column, y = row); conics [N, 3] the (a, b, c) of Σ'⁻¹ =
  [[a, b], [b, c]]; depths [N] camera z of the centre; opacities [N] after mip compensation;
  radii [N, 2] half-extents (x, y) in pixels of the region where α ≥ 1/255 (no gradient);
  visible [N] bool.
  """
  means2d: jax.Array
  conics: jax.Array
  depths: jax.Array
  opacities: jax.Array
  radii: jax.Array
  visible: jax.Array


def quaternion_to_rotation(quats_wxyz: jax.Array) -> jax.Array:
  """Rotation matrices [N, 3, 3] from quaternions [N, 4] (w, x, y, z), normalised first."""
  q = quats_wxyz / jnp.linalg.norm(quats_wxyz, axis=-1, keepdims=True)
  w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
  rows = [
      [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
      [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
      [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
  ]
  return jnp.stack([jnp.stack(row, axis=-1) for row in rows], axis=-2)


def covariance_3d(scales: jax.Array, quats_wxyz: jax.Array) -> jax.Array:
  """World covariances [N, 3, 3] = R diag(s²) Rᵀ from scales [N, 3] and quaternions [N, 4]."""
  rotation_scaled = quaternion_to_rotation(quats_wxyz) * scales[..., None, :]
  return rotation_scaled @ jnp.swapaxes(rotation_scaled, -1, -2)


def apply_filter_3d(scales: jax.Array, opacities: jax.Array, filter_3d) -> tuple[jax.Array,
                                                                                 jax.Array]:
  """Mip-splatting 3D smoothing filter: convolve each Gaussian with an isotropic one.

  scales [N, 3], opacities [N], filter_3d scalar or [N] (standard deviation, world units).
  Returns (√(s² + f²) [N, 3], opacity·√(det Σ / det Σ_filtered) [N]).
  """
  filter_sq = jnp.square(jnp.asarray(filter_3d, scales.dtype))
  filter_sq = jnp.broadcast_to(filter_sq, scales.shape[:1])[:, None]
  scales_sq = jnp.square(scales)
  filtered_sq = scales_sq + filter_sq
  # A zero filter gives back s and o exactly (√(s·s) = s and s²/s² = 1 in IEEE arithmetic).
  # Every branch depends on the scales, so XLA never constant-folds a [N, 3] product.
  positive = filtered_sq > 0
  ratio = jnp.where(positive, scales_sq / jnp.where(positive, filtered_sq, 1.0), 1.0)
  det_ratio = jnp.prod(ratio, axis=-1)
  compensation = jnp.where(det_ratio > 0, jnp.sqrt(jnp.where(det_ratio > 0, det_ratio, 1.0)), 0.0)
  new_scales = jnp.where(positive, jnp.sqrt(jnp.where(positive, filtered_sq, 1.0)), 0.0)
  return new_scales, opacities * compensation


def project_gaussians(means: jax.Array, scales: jax.Array, quats_wxyz: jax.Array,
                      opacities: jax.Array, camera: Camera, filter_2d=0.0,
                      mip: bool | jax.Array = False) -> ProjectedGaussians:
  """Project N Gaussians (means [N, 3], scales [N, 3], quats [N, 4], opacities [N]) to 2D."""
  dtype = means.dtype
  w2c = jnp.asarray(camera.world_to_camera, dtype)
  rotation, translation = w2c[:3, :3], w2c[:3, 3]
  means_cam = means @ rotation.T + translation
  cov_cam = rotation @ covariance_3d(scales, quats_wxyz) @ rotation.T

  depth = means_cam[:, 2]
  in_range = (depth >= camera.near) & (depth <= camera.far)
  # Keep culled Gaussians' arithmetic finite so their (zero) gradients stay finite too.
  safe_depth = jnp.where(in_range, depth, 1.0)
  fx, fy, cx, cy = (jnp.asarray(v, dtype) for v in (camera.fx, camera.fy, camera.cx, camera.cy))
  x_over_z = means_cam[:, 0] / safe_depth
  y_over_z = means_cam[:, 1] / safe_depth
  means2d = jnp.stack([fx * x_over_z + cx, fy * y_over_z + cy], axis=-1)

  jacobian = _perspective_jacobian(x_over_z, y_over_z, safe_depth, fx, fy, cx, cy,
                                   camera.width, camera.height)
  cov2d = jacobian @ cov_cam @ jnp.swapaxes(jacobian, -1, -2)
  var_x, cov_xy, var_y = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
  filter_2d = jnp.asarray(filter_2d, dtype)
  blur_x, blur_y = var_x + filter_2d, var_y + filter_2d
  det_blur = blur_x * blur_y - cov_xy * cov_xy
  valid_det = det_blur > 0
  safe_det = jnp.where(valid_det, det_blur, 1.0)
  conics = jnp.stack([blur_y, -cov_xy, blur_x], axis=-1) / safe_det[:, None]

  # `mip` may be traced, so that both settings share one compiled program.
  det_orig = var_x * var_y - cov_xy * cov_xy
  ratio = det_orig / safe_det
  positive = ratio > 1e-12
  compensation = jnp.where(positive, jnp.sqrt(jnp.where(positive, ratio, 1.0)), 0.0)
  opacities = jnp.where(mip, opacities * compensation, opacities)

  # α ≥ 1/255 ⇔ dᵀΣ'⁻¹d ≤ 2 ln(255·o): an ellipse whose x/y half-extents are r·√Σ'xx, r·√Σ'yy.
  opacity_ratio = jax.lax.stop_gradient(opacities) / ALPHA_MIN
  reaches = opacity_ratio >= 1.0
  radius_sq = 2.0 * jnp.log(jnp.where(reaches, opacity_ratio, 1.0)) + _RADIUS_SQ_MARGIN
  extents = jnp.stack([blur_x, blur_y], axis=-1)
  radii = jax.lax.stop_gradient(jnp.sqrt(radius_sq[:, None] * jnp.maximum(extents, 0.0)))

  visible = in_range & valid_det & reaches
  return ProjectedGaussians(means2d=means2d, conics=conics, depths=depth, opacities=opacities,
                            radii=radii, visible=visible)


def _perspective_jacobian(x_over_z, y_over_z, depth, fx, fy, cx, cy, width, height):
  """d(pixel)/d(camera point) [N, 2, 3], with x/z and y/z clamped like gsplat."""
  margin_x = (_FRUSTUM_CLAMP - 1.0) * 0.5 * width / fx  # 0.3·tan(fov_x / 2)
  margin_y = (_FRUSTUM_CLAMP - 1.0) * 0.5 * height / fy
  limit_x_pos, limit_x_neg = (width - cx) / fx + margin_x, cx / fx + margin_x
  limit_y_pos, limit_y_neg = (height - cy) / fy + margin_y, cy / fy + margin_y
  tx = jnp.clip(x_over_z, -limit_x_neg, limit_x_pos)
  ty = jnp.clip(y_over_z, -limit_y_neg, limit_y_pos)
  zero = jnp.zeros_like(depth)
  row_x = jnp.stack([fx / depth, zero, -fx * tx / depth], axis=-1)
  row_y = jnp.stack([zero, fy / depth, -fy * ty / depth], axis=-1)
  return jnp.stack([row_x, row_y], axis=-2)


@functools.partial(jax.jit, static_argnames=("variance", "margin"))
def filter_3d_from_cameras(means: jax.Array, cameras: Camera, *, variance: float = 0.2,
                           margin: float = 0.15) -> jax.Array:
  """Per-Gaussian std [N] of mip-splatting's 3D filter from the training cameras.

  For each mean, the smallest camera depth over the views whose image (enlarged by `margin` on
  each side) contains it, divided by the largest focal length, times √variance: the world size
  of one pixel at the highest sampling rate the scene was seen with. Means seen by no camera
  get the largest value among the seen ones. `cameras` is a stack (see `orbit_cameras`).
  """
  w2c = jnp.asarray(cameras.world_to_camera, means.dtype)  # [V, 4, 4]
  points = jnp.einsum("vij,nj->vni", w2c[:, :3, :3], means) + w2c[:, None, :3, 3]
  depth = points[..., 2]
  safe_depth = jnp.where(depth > 0, depth, 1.0)
  column = lambda v: jnp.asarray(v, means.dtype).reshape(-1, 1)
  u = column(cameras.fx) * points[..., 0] / safe_depth + column(cameras.cx)
  v = column(cameras.fy) * points[..., 1] / safe_depth + column(cameras.cy)
  width, height = cameras.width, cameras.height
  seen = ((depth > column(cameras.near)) & (u >= -margin * width) & (u <= (1 + margin) * width)
          & (v >= -margin * height) & (v <= (1 + margin) * height))
  nearest = jnp.min(jnp.where(seen, depth, jnp.inf), axis=0)
  seen_any = jnp.isfinite(nearest)
  fallback = jnp.max(jnp.where(seen_any, nearest, 0.0))
  distance = jnp.where(seen_any, nearest, fallback)
  focal = jnp.max(jnp.asarray(cameras.fx, means.dtype))
  return distance / focal * jnp.sqrt(jnp.asarray(variance, means.dtype))
