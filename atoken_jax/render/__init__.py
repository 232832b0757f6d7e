"""Differentiable 3D Gaussian splatting in pure JAX (gsplat conventions).

  cam = Camera(fx, fy, cx, cy, world_to_camera_4x4, width, height, near=0.01, far=100.0)
  out = rasterize(means, scales, quats_wxyz, opacities, colors, cam, background=(0, 0, 0),
                  filter_2d=0.0, mip=False)
  out.rgb [H, W, 3], out.alpha [H, W], out.depth [H, W], out.overflow

See docs/render.md for conventions, options and limits.
"""
from atoken_jax.render.camera import Camera, focal_from_fov, look_at, orbit_cameras
from atoken_jax.render.project import apply_filter_3d, project_gaussians
from atoken_jax.render.rasterize import RenderOutput, rasterize

__all__ = [
    "Camera", "RenderOutput", "apply_filter_3d", "focal_from_fov", "look_at", "orbit_cameras",
    "project_gaussians", "rasterize",
]
