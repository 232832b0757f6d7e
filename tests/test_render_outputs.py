"""Outputs people use: 3DGS .ply export/import and turntable videos."""
import av
import numpy as np
import pytest
from PIL import Image

from atoken_jax import render
from atoken_jax.render import ply, sh
from tests.test_render_reference import STANDARD_OPTIONS, pad_scene, random_scene

INRIA_ORDER = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
               + [f"f_rest_{k}" for k in range(45)]
               + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def test_ply_header_is_the_standard_3dgs_layout(tmp_path):
  scene = random_scene(0, 7)
  path = tmp_path / "scene.ply"
  render.write_ply(path, **scene)
  data = path.read_bytes()
  header, body = data.split(b"end_header\n", 1)
  lines = header.decode("ascii").splitlines()
  assert lines[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 7"]
  names = [line.split()[2] for line in lines[3:]]
  assert all(line.startswith("property float ") for line in lines[3:])
  assert names == [n for n in INRIA_ORDER if not n.startswith("f_rest_")]
  assert len(body) == 7 * len(names) * 4
  raw = np.frombuffer(body, "<f4").reshape(7, len(names))
  column = {name: raw[:, k] for k, name in enumerate(names)}
  np.testing.assert_allclose(column["x"], scene["means"][:, 0])
  np.testing.assert_allclose(column["f_dc_1"], (scene["colors"][:, 1] - 0.5) / sh.SH_C0,
                             rtol=1e-5)
  np.testing.assert_allclose(column["opacity"],
                             np.log(scene["opacities"] / (1 - scene["opacities"])), rtol=1e-4)
  np.testing.assert_allclose(column["scale_2"], np.log(scene["scales"][:, 2]), rtol=1e-5)
  quats = scene["quats_wxyz"] / np.linalg.norm(scene["quats_wxyz"], axis=-1, keepdims=True)
  np.testing.assert_allclose(column["rot_0"], quats[:, 0], rtol=1e-5, atol=1e-7)


def test_ply_round_trip_rgb(tmp_path):
  scene = random_scene(1, 11)
  path = tmp_path / "scene.ply"
  render.write_ply(path, **scene)
  back = render.read_ply(path)
  for name in ("means", "scales", "opacities", "colors"):
    np.testing.assert_allclose(back[name], scene[name], rtol=1e-5, atol=1e-6, err_msg=name)
  quats = scene["quats_wxyz"] / np.linalg.norm(scene["quats_wxyz"], axis=-1, keepdims=True)
  np.testing.assert_allclose(back["quats_wxyz"], quats, atol=1e-6)


def test_ply_round_trip_sh_degree_3(tmp_path):
  scene = random_scene(2, 4)
  coeffs = np.random.default_rng(0).normal(size=(4, 16, 3)).astype(np.float32)
  path = tmp_path / "sh.ply"
  render.write_ply(path, **dict(scene, colors=coeffs))
  fields = ply.read_ply_fields(path)
  assert list(fields) == INRIA_ORDER
  # f_rest is channel-major: f_rest_0..14 are red coefficients 1..15.
  np.testing.assert_allclose(fields["f_rest_0"], coeffs[:, 1, 0])
  np.testing.assert_allclose(fields["f_rest_15"], coeffs[:, 1, 1])
  np.testing.assert_allclose(render.read_ply(path)["colors"], coeffs, rtol=1e-6)


def test_ply_rejects_bad_shapes(tmp_path):
  scene = random_scene(3, 4)
  with pytest.raises(ValueError, match="scales"):
    render.write_ply(tmp_path / "x.ply", **dict(scene, scales=scene["scales"][:3]))
  with pytest.raises(ValueError, match="SH"):
    render.write_ply(tmp_path / "x.ply", **dict(scene, colors=np.zeros((4, 5, 3))))


def test_turntable_writes_gif_and_mp4(tmp_path):
  scene = pad_scene(random_scene(4, 40, spread=0.3))
  frames = render.render_turntable(**scene, num_views=4, radius=2.5, width=40, height=36,
                                   **STANDARD_OPTIONS)
  assert frames.shape == (4, 36, 40, 3) and frames.dtype == np.uint8
  assert frames.max() > 100
  assert np.abs(frames[0].astype(int) - frames[1].astype(int)).max() > 30
  render.write_video(frames, tmp_path / "turn.gif", fps=8)
  with Image.open(tmp_path / "turn.gif") as gif:
    assert gif.n_frames == 4 and gif.size == (40, 36)
  render.write_video(frames, tmp_path / "turn.mp4", fps=8)
  with av.open(str(tmp_path / "turn.mp4")) as container:
    decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
  assert len(decoded) == 4 and decoded[0].shape == (36, 40, 3)
  with pytest.raises(ValueError, match="mp4 or .gif"):
    render.write_video(frames, tmp_path / "turn.avi")
