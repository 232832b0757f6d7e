"""3D assets -> `VoxelAsset`: meshes (trimesh + our rasteriser) or NeRF-layout renders (spec §1.3).

Meshes (glb, gltf, obj, ply, stl, off) are loaded with trimesh, their bounding box is scaled to
fill [-0.5, 0.5]^3 (longest side 1, as TRELLIS normalises), rendered from `num_views` cameras on
a sphere (radius 2, 40 degrees) at 256^2 with depth, and voxelised. Colours: vertex colours,
face colours, or texture colours sampled at the vertices (trimesh `to_color`); grey otherwise.

NeRF layout: a folder with `transforms.json` = {"camera_angle_x", "frames": [{"file_path",
"transform_matrix", optional "depth_file_path"}]}. The RGB file is `file_path` (".png" added when
it has no extension); the depth map (camera z, float, same scene units as the matrices; values
<= 0, non-finite or > 1e6 are invalid) is `depth_file_path`, else `<file_path>_depth.npy`. Depth
must be .npy (read with allow_pickle=False) or a 16-bit PNG with "depth_scale" in the frame
(depth = value * depth_scale; 0 = invalid). RGB is resized to 256^2 (LANCZOS) and alpha is
dropped, as the release's pasting on black does.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np
from PIL import Image

from data_pipelines import cameras, image_decode, mesh_render, voxelize

MESH_EXTS = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
RENDER_PX = 256
_MAX_DEPTH = 1e6


def load_mesh(data: bytes, ext: str):
  """Mesh file bytes -> (vertices [V,3], faces [F,3], vertex_colors [V,3] | None,
  face_colors [F,3] | None), colours in [0, 1].

  Raises:
    ValueError: unreadable file, or a mesh without faces.
  """
  import trimesh  # pylint: disable=import-outside-toplevel

  try:
    mesh = trimesh.load(io.BytesIO(data), file_type=ext.lstrip(".").lower(), force="mesh")
  except Exception as e:  # noqa: BLE001 - trimesh raises many types on bad files
    raise ValueError(f"unreadable mesh: {type(e).__name__}: {e}") from None
  faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), np.int64)
  vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), np.float64)
  if len(faces) == 0 or len(vertices) == 0:
    raise ValueError("mesh has no faces")
  if not np.isfinite(vertices).all() or faces.min() < 0 or faces.max() >= len(vertices):
    raise ValueError("mesh has non-finite vertices or out-of-range faces")
  vertex_colors = face_colors = None
  visual = getattr(mesh, "visual", None)
  try:
    if visual is not None and visual.kind == "texture":
      visual = visual.to_color()
    if visual is not None and visual.kind == "vertex":
      vertex_colors = np.asarray(visual.vertex_colors)[:, :3] / 255.0
    elif visual is not None and visual.kind == "face":
      face_colors = np.asarray(visual.face_colors)[:, :3] / 255.0
  except Exception:  # noqa: BLE001 - a broken texture leaves the mesh grey, not unreadable
    vertex_colors = face_colors = None
  return vertices, faces, vertex_colors, face_colors


def render_views(vertices, faces, vertex_colors=None, face_colors=None, num_views: int = 16,
                 size: int = RENDER_PX):
  """Normalised mesh -> (views [V,S,S,3] uint8, depths [V,S,S] float32, w2c [V,4,4], fov [V])."""
  w2c, fov_x = cameras.sphere_cameras(num_views)
  v = mesh_render.normalize_vertices(vertices)
  renders = [mesh_render.render_mesh(v, faces, m, f, size, vertex_colors, face_colors)
             for m, f in zip(w2c, fov_x)]
  return (np.stack([r[0] for r in renders]), np.stack([r[1] for r in renders]), w2c, fov_x)


def mesh_to_asset(vertices, faces, vertex_colors=None, face_colors=None, num_views: int = 16,
                  size: int = RENDER_PX, seed: int = 0) -> voxelize.VoxelAsset:
  """A mesh -> its `VoxelAsset` (render on a sphere, unproject, nearest-view patches)."""
  views, depths, w2c, fov_x = render_views(vertices, faces, vertex_colors, face_colors,
                                           num_views, size)
  return voxelize.voxelize_views(views, depths, w2c, fov_x, np.random.default_rng(seed))


def _load_depth(path: str, frame: dict) -> np.ndarray:
  if path.lower().endswith(".npy"):
    depth = np.load(path, allow_pickle=False).astype(np.float64)
  elif path.lower().endswith(".png"):
    scale = frame.get("depth_scale")
    if not isinstance(scale, (int, float)):
      raise ValueError(f"{path}: a PNG depth map needs a numeric 'depth_scale' in its frame")
    with Image.open(path) as im:
      raw = np.asarray(im).astype(np.float64)
    depth = np.where(raw > 0, raw * scale, -1.0)
  else:
    raise ValueError(f"{path}: depth must be .npy or 16-bit .png (convert .exr first)")
  if depth.ndim == 3:
    depth = depth[..., 0]
  if depth.ndim != 2 or depth.shape[0] != depth.shape[1]:
    raise ValueError(f"{path}: depth must be a square 2-D map, got {depth.shape}")
  return np.where(np.isfinite(depth) & (depth > 0) & (depth <= _MAX_DEPTH), depth, -1.0)


def load_nerf_views(directory: str, size: int = RENDER_PX):
  """A NeRF-layout folder -> (views [V,S,S,3] uint8, depths list of [D,D], w2c [V,4,4], fov [V]).

  Raises:
    ValueError / OSError: missing or malformed files.
  """
  with open(os.path.join(directory, "transforms.json"), "rb") as fh:
    meta = json.loads(fh.read().decode("utf-8"))
  fov = meta.get("camera_angle_x") if isinstance(meta, dict) else None
  frames = meta.get("frames") if isinstance(meta, dict) else None
  if not isinstance(fov, (int, float)) or not isinstance(frames, list) or not frames:
    raise ValueError("transforms.json needs 'camera_angle_x' and a non-empty 'frames' list")
  views, depths, w2c = [], [], []
  for frame in frames:
    rel = frame.get("file_path") if isinstance(frame, dict) else None
    if not isinstance(rel, str):
      raise ValueError("every frame needs a 'file_path'")
    rgb_path = os.path.normpath(os.path.join(directory, rel))
    if not os.path.splitext(rgb_path)[1]:
      rgb_path += ".png"
    im = image_decode.read_rgb_file(rgb_path, background=0)  # alpha over black, as we render
    if im.width != im.height:
      raise ValueError(f"{rgb_path}: only square renders are supported, got {im.size}")
    views.append(np.asarray(im.resize((size, size), Image.LANCZOS)))
    depth_rel = frame.get("depth_file_path")
    depth_path = (os.path.join(directory, depth_rel) if isinstance(depth_rel, str)
                  else os.path.splitext(rgb_path)[0] + "_depth.npy")
    depths.append(_load_depth(depth_path, frame))
    matrix = np.asarray(frame.get("transform_matrix"), np.float64)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
      raise ValueError(f"{rel}: transform_matrix must be a finite 4x4 matrix")
    w2c.append(cameras.nerf_c2w_to_w2c(matrix))
  return np.stack(views), depths, np.stack(w2c), np.full(len(frames), float(fov))


def nerf_to_asset(directory: str, seed: int = 0, size: int = RENDER_PX) -> voxelize.VoxelAsset:
  """A NeRF-layout folder -> `VoxelAsset` (depth maps may have any square size)."""
  views, depths, w2c, fov_x = load_nerf_views(directory, size)
  if len(views) > voxelize.NO_VIEW:
    raise ValueError(f"at most {voxelize.NO_VIEW} views, got {len(views)}")
  rng = np.random.default_rng(seed)
  coords = voxelize.occupancy(depths, w2c, fov_x, rng)
  if len(coords) == 0:
    raise ValueError("no depth pixel falls inside the [-0.5, 0.5]^3 grid")
  src = voxelize.nearest_view_patches(coords, w2c, fov_x, size // 16)
  return voxelize.VoxelAsset(coords=coords.astype(np.uint8), src=src, views=views,
                             w2c=w2c.astype(np.float32), fov_x=fov_x.astype(np.float32))


def write_nerf_views(directory: str, views, depths, w2c, fov_x) -> None:
  """Writes renders in the NeRF layout read by `load_nerf_views` (PNG + _depth.npy)."""
  os.makedirs(directory, exist_ok=True)
  frames = []
  for i, (view, depth, m) in enumerate(zip(views, depths, w2c)):
    Image.fromarray(view).save(os.path.join(directory, f"r_{i}.png"))
    np.save(os.path.join(directory, f"r_{i}_depth.npy"), np.asarray(depth, np.float32))
    frames.append({"file_path": f"./r_{i}", "transform_matrix":
                   cameras.w2c_to_nerf_c2w(m).tolist()})
  with open(os.path.join(directory, "transforms.json"), "w") as fh:
    json.dump({"camera_angle_x": float(fov_x[0]), "frames": frames}, fh)
