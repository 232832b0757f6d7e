"""Differentiable 3D Gaussian splatting in pure JAX (gsplat conventions).

  cam = Camera(fx, fy, cx, cy, world_to_camera_4x4, width, height, near=0.01, far=100.0)
  out = rasterize(means, scales, quats_wxyz, opacities, colors, cam, background=(0, 0, 0),
                  filter_2d=0.0, mip=False)
  out.rgb [H, W, 3], out.alpha [H, W], out.depth [H, W], out.overflow

See docs/render.md for conventions, options and limits.
"""
from atoken_jax.render.camera import Camera, focal_from_fov, look_at, orbit_cameras
from atoken_jax.render.ply import read_ply, write_ply
from atoken_jax.render.project import apply_filter_3d, filter_3d_from_cameras, project_gaussians
from atoken_jax.render.rasterize import RenderOutput, rasterize
from atoken_jax.render.sh import rgb_to_sh0, sh_to_rgb
from atoken_jax.render.turntable import render_turntable, write_turntable, write_video

__all__ = [
    "Camera", "RenderOutput", "apply_filter_3d", "filter_3d_from_cameras", "focal_from_fov",
    "look_at", "orbit_cameras",
    "project_gaussians", "rasterize", "read_ply", "render_turntable", "rgb_to_sh0", "sh_to_rgb",
    "write_ply", "write_turntable", "write_video",
]
