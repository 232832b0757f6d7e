"""The 3D packing recipe (spec §1.3) against independent checks: our rasteriser's depth, a cube's
voxels on its surface, every voxel's patch from its nearest view, NeRF-layout round trip."""
import numpy as np
import pytest
import trimesh

from data_pipelines import assets3d, cameras, decode, mesh_render, voxelize

# Face colours of the unit cube by outward normal; distinct channel patterns survive shading.
FACE_COLOURS = {(0, 1): (1, 0, 0), (0, -1): (0, 1, 0), (1, 1): (0, 0, 1), (1, -1): (1, 1, 0),
                (2, 1): (1, 0, 1), (2, -1): (0, 1, 1)}


def coloured_cube():
  mesh = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
  normals = np.asarray(mesh.face_normals)
  axis = np.abs(normals).argmax(1)
  sign = np.sign(normals[np.arange(len(axis)), axis]).astype(int)
  colours = np.array([FACE_COLOURS[(a, s)] for a, s in zip(axis, sign)], float)
  return np.asarray(mesh.vertices), np.asarray(mesh.faces), colours


@pytest.fixture(scope="module")
def cube_renders():
  v, f, colours = coloured_cube()
  return assets3d.render_views(v, f, face_colors=colours, num_views=16)


@pytest.fixture(scope="module")
def cube_asset(cube_renders):
  views, depths, w2c, fov = cube_renders
  return voxelize.voxelize_views(views, depths, w2c, fov, np.random.default_rng(0))


def test_rasteriser_depth_of_a_cube_face_seen_head_on():
  v, f, _ = coloured_cube()
  v = v * 0.8  # half size 0.4, camera at distance 2 on +x: front face at depth 1.6
  w2c = cameras.look_at(np.array([2.0, 0.0, 0.0]))
  fov, size = np.deg2rad(40.0), 128
  rgb, depth = mesh_render.render_mesh(v, f, w2c, fov, size)
  tan = (np.arange(size) + 0.5 - size / 2) / (cameras.focal_normalised(fov) * size)
  inside = (np.abs(tan) < 0.25 - 1e-3)[:, None] & (np.abs(tan) < 0.25 - 1e-3)[None, :]
  outside = (np.abs(tan) > 0.25 + 1e-3)[:, None] | (np.abs(tan) > 0.25 + 1e-3)[None, :]
  np.testing.assert_allclose(depth[inside], 1.6, atol=1e-9)
  assert (depth[outside] == -1).all() and (rgb[outside] == 0).all()
  assert (rgb[inside] > 0).any(axis=-1).all()


def test_cube_voxels_lie_on_its_surface_and_cover_it(cube_asset):
  c = cube_asset.coords.astype(int)
  on_shell = ((c == 0) | (c == 63)).any(axis=1)
  assert on_shell.all(), f"{(~on_shell).sum()} voxels inside the cube"
  assert len(np.unique(c, axis=0)) == len(c)
  assert (np.lexsort(c.T[::-1]) == np.arange(len(c))).all()  # lexicographic (i, j, k) order
  shell = 64 ** 3 - 62 ** 3
  assert len(c) >= 0.97 * shell, f"{len(c)} of {shell} surface voxels"


def test_each_voxel_takes_the_patch_of_its_nearest_view(cube_renders, cube_asset):
  views, _, w2c, fov = cube_renders
  feats = voxelize.voxel_feats(cube_asset.src, cube_asset.views)
  rng = np.random.default_rng(1)
  picks = rng.choice(len(cube_asset.coords), 300, replace=False)
  for n in picks:
    centre = (cube_asset.coords[n].astype(float) + 0.5) / 64 - 0.5
    # Independent: camera centre and forward axis from each matrix, depth along the axis.
    dists = []
    for m in w2c:
      rot, t = m[:3, :3], m[:3, 3]
      eye = -rot.T @ t
      dists.append(float(np.dot(centre - eye, rot[2])))
    v = int(np.argmin(dists))
    rot, t = w2c[v][:3, :3], w2c[v][:3, 3]
    x, y, z = rot @ centre + t
    f_px = 0.5 / np.tan(fov[v] / 2) * 256
    col_px, row_px = f_px * x / z + 128, f_px * y / z + 128
    pr, pc = int(np.rint(row_px / 256 * 15)), int(np.rint(col_px / 256 * 15))
    block = views[v][pr * 16:(pr + 1) * 16, pc * 16:(pc + 1) * 16] / 255.0
    assert cube_asset.src[n, 0] == v
    np.testing.assert_array_equal(feats[n], block.reshape(-1).astype(np.float32))


def test_patches_of_face_voxels_show_that_face(cube_asset):
  feats = voxelize.voxel_feats(cube_asset.src, cube_asset.views).reshape(-1, 256, 3)
  c = cube_asset.coords.astype(int)
  hits = total = 0
  for (axis, sign), colour in FACE_COLOURS.items():
    others = [a for a in range(3) if a != axis]
    on_face = (c[:, axis] == (63 if sign > 0 else 0)) & (
        (c[:, others] >= 4) & (c[:, others] <= 59)).all(axis=1)
    mean = feats[on_face].mean(axis=1)
    pattern = mean / np.maximum(mean.max(axis=1, keepdims=True), 1e-6) > 0.5
    hits += (pattern == np.array(colour, bool)).all(axis=1).sum()
    total += on_face.sum()
  assert hits >= 0.9 * total, f"{hits} of {total} face voxels show their face's colour"


def test_feature_layout_is_row_col_rgb_within_the_patch():
  view = np.zeros((1, 32, 32, 3), np.uint8)
  rr, cc = np.mgrid[0:32, 0:32]
  view[0, ..., 0], view[0, ..., 1], view[0, ..., 2] = rr, cc, 7
  feats = voxelize.voxel_feats(np.array([[0, 1, 0], [0, 255, 255]], np.uint8), view)
  patch = (feats[0] * 255).round().reshape(16, 16, 3)
  assert patch[3, 5, 0] == 16 + 3 and patch[3, 5, 1] == 5 and patch[3, 5, 2] == 7
  assert (feats[1] == 0).all()  # outside every view: zero feature


def test_nerf_layout_round_trip_gives_the_same_asset(tmp_path, cube_renders, cube_asset):
  views, depths, w2c, fov = cube_renders
  assets3d.write_nerf_views(str(tmp_path / "cube"), views, depths, w2c, fov)
  again = assets3d.nerf_to_asset(str(tmp_path / "cube"), seed=0)
  np.testing.assert_array_equal(again.coords, cube_asset.coords)
  np.testing.assert_array_equal(again.src, cube_asset.src)
  np.testing.assert_array_equal(again.views, views)


@pytest.mark.parametrize("ext", ["obj", "ply", "glb"])
def test_mesh_files_become_voxels(tmp_path, ext):
  mesh = trimesh.creation.cone(radius=0.5, height=1.0, sections=12)
  data = mesh.export(file_type=ext)
  data = data.encode() if isinstance(data, str) else data
  asset = decode.voxel_asset({"kind": "voxels", "mesh_bytes": data, "ext": ext}, 8, seed=0)
  assert 500 < len(asset.coords) < 64 ** 3 and asset.views.shape == (8, 256, 256, 3)


def test_bad_meshes_are_bad_data():
  with pytest.raises(decode.BadData, match="no_faces"):
    decode.voxel_asset({"kind": "voxels", "mesh_bytes": b"v 0 0 0\nv 1 0 0\n", "ext": "obj"},
                       4, 0)
  with pytest.raises(decode.BadData, match="decode_error"):
    decode.voxel_asset({"kind": "voxels", "mesh_bytes": b"glTF\x02" + b"\xff" * 30,
                        "ext": "glb"}, 4, 0)
