"""Small procedural 3D assets for tests, smoke runs and docs, built by the data pipeline itself.

`procedural_asset("cone", extent=0.25, num_views=6, size=64, fov_deg=12)` renders a coloured
trimesh primitive with `data_pipelines.mesh_render` from `data_pipelines.cameras.sphere_cameras`
(radius 2) and voxelises it with `data_pipelines.voxelize` (64³ grid, nearest-view patches): the
same `VoxelAsset` a prepared record holds, only smaller. `extent` < 1 shrinks the object (fewer
voxels: ~800 surface voxels at 0.25 instead of ~15k), and a narrow `fov_deg` keeps it filling
the frame. Bundled dataset assets (`data_pipelines.ensure_default_dataset()`) are full size.
"""
from __future__ import annotations

import numpy as np

SHAPES = ("box", "sphere", "cylinder", "cone", "torus")


def shape_mesh(shape: str, seed: int = 0):
  """-> (vertices [V, 3], faces [F, 3], vertex colours [V, 3] in [0, 1]): a coloured primitive
  (a colour gradient along x, y, z plus noise, so that views differ)."""
  import trimesh  # pylint: disable=import-outside-toplevel
  make = {
      "box": lambda: trimesh.creation.box(extents=(1.0, 0.7, 0.5)),
      "sphere": lambda: trimesh.creation.icosphere(subdivisions=2),
      "cylinder": lambda: trimesh.creation.cylinder(radius=0.3, height=1.0, sections=24),
      "cone": lambda: trimesh.creation.cone(radius=0.5, height=1.0, sections=24),
      "torus": lambda: trimesh.creation.torus(major_radius=0.4, minor_radius=0.15,
                                              major_sections=24, minor_sections=10),
  }
  if shape not in make:
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
  mesh = make[shape]()
  v = np.asarray(mesh.vertices, np.float64)
  grad = (v - v.min(0)) / np.maximum(np.ptp(v, axis=0), 1e-9)
  noise = np.random.default_rng(seed).normal(0.0, 0.03, v.shape)
  colors = np.clip(0.15 + 0.8 * grad[:, [2, 0, 1]] + noise, 0.0, 1.0)
  return v, np.asarray(mesh.faces), colors


def procedural_asset(shape: str = "cone", extent: float = 0.25, num_views: int = 6,
                     size: int = 64, fov_deg: float = 12.0, seed: int = 0):
  """A small `VoxelAsset` (see the module docstring). size must be a multiple of 16."""
  from data_pipelines import cameras, mesh_render, voxelize  # pylint: disable=import-outside-toplevel
  v, f, colors = shape_mesh(shape, seed)
  v = mesh_render.normalize_vertices(v, extent)
  w2c, fov_x = cameras.sphere_cameras(num_views, fov_deg=fov_deg)
  renders = [mesh_render.render_mesh(v, f, m, fx, size, vertex_colors=colors)
             for m, fx in zip(w2c, fov_x)]
  views = np.stack([r[0] for r in renders])
  depths = np.stack([r[1] for r in renders])
  return voxelize.voxelize_views(views, depths, w2c, fov_x, np.random.default_rng(seed))
