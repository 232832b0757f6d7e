"""Cameras: NeRF transforms.json convention, look_at, orbits, pytree behaviour, 3D filter."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atoken_jax import render


def _project(camera, point):
  """Pixel (x, y) and depth of a world point, straight from the definition."""
  cam = np.asarray(camera.world_to_camera, np.float64) @ np.append(point, 1.0)
  return (float(camera.fx) * cam[0] / cam[2] + float(camera.cx),
          float(camera.fy) * cam[1] / cam[2] + float(camera.cy), cam[2])


def test_from_nerf_blender_camera_semantics():
  """A Blender/NeRF camera at (0, 0, 3) with identity rotation looks down −z with +y up."""
  c2w = np.eye(4)
  c2w[2, 3] = 3.0
  camera = render.Camera.from_nerf(c2w, math.radians(50.0), 64, 48)
  assert float(camera.fx) == pytest.approx(32 / math.tan(math.radians(25.0)))
  assert float(camera.fy) == float(camera.fx)
  x, y, depth = _project(camera, [0.0, 0.0, 0.0])
  assert (x, y, depth) == pytest.approx((32.0, 24.0, 3.0))
  x_up, y_up, _ = _project(camera, [0.0, 0.2, 0.0])  # world +y is up in the image
  assert y_up < 24.0 and x_up == pytest.approx(32.0)
  x_right, _, _ = _project(camera, [0.2, 0.0, 0.0])  # world +x is to the right
  assert x_right > 32.0
  assert camera.camera_angle_x == pytest.approx(math.radians(50.0))


def test_from_nerf_round_trip_and_agreement_with_look_at():
  eye = np.array([1.2, -2.0, 0.7])
  w2c = render.look_at(eye, (0.1, 0.0, -0.1))
  c2w_nerf = np.linalg.inv(w2c) * np.array([1.0, -1.0, -1.0, 1.0])  # Y, Z columns negated
  camera = render.Camera.from_nerf(c2w_nerf[:3], 0.8, 32, 32)  # a [3, 4] matrix also works
  np.testing.assert_allclose(np.asarray(camera.world_to_camera), w2c, atol=1e-6)
  np.testing.assert_allclose(camera.to_nerf(), c2w_nerf, atol=1e-6)
  np.testing.assert_allclose(np.asarray(camera.camera_center), eye, atol=1e-5)


def test_look_at_is_a_rigid_opencv_pose():
  eye, target = np.array([0.5, -3.0, 1.0]), np.array([0.0, 0.2, 0.1])
  w2c = render.look_at(eye, target, up=(0, 0, 1))
  rotation = w2c[:3, :3]
  np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
  assert np.linalg.det(rotation) == pytest.approx(1.0)
  np.testing.assert_allclose(w2c[:3, :3] @ eye + w2c[:3, 3], 0.0, atol=1e-12)
  forward = w2c[:3, :3] @ (target - eye)
  np.testing.assert_allclose(forward[:2], 0.0, atol=1e-12)
  assert forward[2] > 0
  assert (w2c[:3, :3] @ np.array([0.0, 0.0, 1.0]))[1] < 0  # world up → image up (−y)
  with pytest.raises(ValueError, match="parallel"):
    render.look_at((0, 0, 2), (0, 0, 0), up=(0, 0, 1))


def test_orbit_cameras_circle_the_target():
  target = np.array([0.1, -0.2, 0.05])
  cams = render.orbit_cameras(6, 2.0, 30.0, 40.0, 48, 32, target=tuple(target))
  assert cams.num_views == 6 and cams.world_to_camera.shape == (6, 4, 4)
  for index in range(6):
    view = cams.view(index)
    assert view.num_views is None and view.width == 48 and view.height == 32
    centre = np.asarray(view.camera_center, np.float64)
    assert np.linalg.norm(centre - target) == pytest.approx(2.0, rel=1e-5)
    assert (centre - target)[2] / 2.0 == pytest.approx(math.sin(math.radians(30.0)), rel=1e-5)
    x, y, depth = _project(view, target)
    assert (x, y, depth) == pytest.approx((24.0, 16.0, 2.0), rel=1e-5)
  assert float(cams.fx[0]) == pytest.approx(render.focal_from_fov(40.0, 48))


def test_camera_is_a_pytree_with_static_size():
  camera = render.Camera(10.0, 11.0, 4.0, 5.0, jnp.eye(4), 8, 6)
  leaves = jax.tree.leaves(camera)
  assert len(leaves) == 7  # fx fy cx cy world_to_camera near far; width/height are static
  doubled = jax.jit(lambda c: c.replace(fx=c.fx * c.width))(camera)
  assert float(doubled.fx) == 80.0 and doubled.width == 8
  np.testing.assert_allclose(np.asarray(camera.intrinsics),
                             [[10.0, 0.0, 4.0], [0.0, 11.0, 5.0], [0.0, 0.0, 1.0]])


def test_filter_3d_from_cameras():
  """std = (nearest seeing depth) / (largest focal) · √0.2; unseen points get the largest."""
  cams = render.orbit_cameras(2, 2.0, 0.0, 40.0, 32, 32, start_azimuth_deg=0.0)
  focal = float(cams.fx[0])
  eye0 = np.asarray(cams.view(0).camera_center)
  means = jnp.asarray(np.stack([np.zeros(3), 0.5 * eye0, 50.0 * np.array([0, 0, 1.0])]),
                      jnp.float32)
  got = np.asarray(render.filter_3d_from_cameras(means, cams))
  assert got[0] == pytest.approx(2.0 / focal * math.sqrt(0.2), rel=1e-5)
  assert got[1] == pytest.approx(1.0 / focal * math.sqrt(0.2), rel=1e-5)  # halfway to camera 0
  assert got[2] == pytest.approx(got[0], rel=1e-5)  # straight up: no camera sees it
