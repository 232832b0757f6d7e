"""Limiting cases with closed forms: one Gaussian's peak and footprint, the 2D filter and mip
compensation, the 3D filter, near/far culling, and tile overflow."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from atoken_jax import render
from tests.test_render_reference import (
  pad_scene,
  random_scene,
  reference_render_np,
  render_standard,
)

FOCAL, WIDTH, HEIGHT = 50.0, 40, 36


def _camera(near=0.01, far=100.0):
  """Identity pose: camera at the origin looking down +z; principal point at the centre."""
  return render.Camera(FOCAL, FOCAL, WIDTH / 2, HEIGHT / 2, jnp.eye(4), WIDTH, HEIGHT,
                       near=near, far=far)


def _one_gaussian(pixel_xy, depth, scales, opacity, color=(0.9, 0.5, 0.1), quat=(1, 0, 0, 0)):
  """A Gaussian whose centre projects to image point `pixel_xy` at camera depth `depth`."""
  x = (pixel_xy[0] - WIDTH / 2) * depth / FOCAL
  y = (pixel_xy[1] - HEIGHT / 2) * depth / FOCAL
  return dict(means=np.array([[x, y, depth]], np.float32),
              scales=np.array([scales], np.float32),
              quats_wxyz=np.array([quat], np.float32),
              opacities=np.array([opacity], np.float32),
              colors=np.array([color], np.float32))


def _pixel_grid():
  cols, rows = np.meshgrid(np.arange(WIDTH) + 0.5, np.arange(HEIGHT) + 0.5)
  return cols, rows


def test_peak_value_and_depth_at_the_centre_pixel():
  scene = _one_gaussian((20.5, 18.5), 2.0, (0.06, 0.06, 0.06), 0.7)
  background = np.array([0.1, 0.2, 0.3])
  out = render_standard(scene, _camera(), background=tuple(background))
  assert float(out.alpha[18, 20]) == pytest.approx(0.7, abs=1e-6)
  np.testing.assert_allclose(np.asarray(out.rgb[18, 20]),
                             0.7 * np.array([0.9, 0.5, 0.1]) + 0.3 * background, atol=1e-6)
  covered = np.asarray(out.alpha) > 0
  np.testing.assert_allclose(np.asarray(out.depth)[covered], 2.0, rtol=1e-5)
  assert float(out.alpha[0, 0]) == 0.0 and float(out.depth[0, 0]) == 0.0
  np.testing.assert_allclose(np.asarray(out.rgb[0, 0]), background, atol=1e-7)


def test_opacity_above_clamp_gives_alpha_0999():
  out = render_standard(_one_gaussian((20.5, 18.5), 2.0, (0.06, 0.06, 0.06), 1.0), _camera())
  assert float(out.alpha[18, 20]) == pytest.approx(0.999, abs=1e-6)


@pytest.mark.parametrize("angle", [0.0, 0.6])
def test_footprint_matches_closed_form(angle):
  """Rotated anisotropic Gaussian on the optical axis: Σ2d = (f/z)² R diag(sx², sy²) Rᵀ."""
  depth, sx, sy, opacity = 2.5, 0.25, 0.1, 0.8
  quat = (math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2))  # rotation about the view axis
  centre = (WIDTH / 2, HEIGHT / 2)
  out = render_standard(_one_gaussian(centre, depth, (sx, sy, 0.01), opacity, quat=quat),
                        _camera())
  rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
  cov = (FOCAL / depth) ** 2 * rotation @ np.diag([sx ** 2, sy ** 2]) @ rotation.T
  # The third axis (0.01) adds nothing on the optical axis: J's third column is zero there.
  conic = np.linalg.inv(cov)
  cols, rows = _pixel_grid()
  dx, dy = cols - centre[0], rows - centre[1]
  value = opacity * np.exp(-0.5 * (conic[0, 0] * dx * dx + 2 * conic[0, 1] * dx * dy
                                   + conic[1, 1] * dy * dy))
  want = np.where(value >= 1 / 255, value, 0.0)
  alpha = np.asarray(out.alpha)
  np.testing.assert_allclose(alpha, want, atol=2e-6)
  far_from_threshold = np.abs(value - 1 / 255) > 1e-5
  np.testing.assert_array_equal((alpha > 0)[far_from_threshold], (want > 0)[far_from_threshold])
  # The footprint reaches several tiles, so tile culling is exercised.
  assert (alpha > 0).sum() > 16 * 16


def _alpha_mass(out):
  return float(jnp.sum(out.alpha))


def test_filter_2d_without_mip_widens_and_keeps_peak():
  """Σ' = Σ + k·I: the peak stays o, the footprint widens to σ² + k."""
  sigma_px, k, opacity = 3.0, 2.0, 0.3
  scene = _one_gaussian((20.5, 18.5), 2.0, (sigma_px * 2.0 / FOCAL,) * 2 + (0.01,), opacity)
  out = render_standard(scene, _camera(), filter_2d=k, mip=False)
  assert float(out.alpha[18, 20]) == pytest.approx(opacity, rel=1e-5)
  r = 3.0  # pixel (18, 23) is 3 px to the right of the centre
  want = opacity * math.exp(-0.5 * r * r / (sigma_px ** 2 + k))
  assert float(out.alpha[18, 23]) == pytest.approx(want, rel=1e-4)


def test_mip_compensation_formula_and_mass_conservation():
  """mip: peak o·√(det Σ / det Σ') = o·σ²/(σ² + k) for isotropic σ; mass ≈ 2πσ²(o − 1/255)
  is the unfiltered one (what the compensation is for)."""
  sigma_px, k, opacity = 3.0, 2.0, 0.6
  scene = _one_gaussian((20.5, 18.5), 2.0, (sigma_px * 2.0 / FOCAL,) * 2 + (0.01,), opacity)
  plain = render_standard(scene, _camera(), filter_2d=0.0, mip=False)
  mip = render_standard(scene, _camera(), filter_2d=k, mip=True)
  compensated = opacity * sigma_px ** 2 / (sigma_px ** 2 + k)
  assert float(mip.alpha[18, 20]) == pytest.approx(compensated, rel=1e-5)
  plain_mass = 2 * math.pi * sigma_px ** 2 * (opacity - 1 / 255)
  mip_mass = 2 * math.pi * (sigma_px ** 2 + k) * (compensated - 1 / 255)
  assert _alpha_mass(plain) == pytest.approx(plain_mass, rel=5e-3)
  assert _alpha_mass(mip) == pytest.approx(mip_mass, rel=5e-3)
  assert mip_mass == pytest.approx(plain_mass, rel=5e-3)


def test_filter_3d_matches_prefiltered_gaussians():
  scene = random_scene(11, 20, spread=0.3)
  scene["means"][:, 2] += 2.5
  filter_3d = np.linspace(0.0, 0.05, 20).astype(np.float32)
  scales, opacities = render.apply_filter_3d(jnp.asarray(scene["scales"]),
                                             jnp.asarray(scene["opacities"]), filter_3d)
  want_scales = np.sqrt(scene["scales"] ** 2 + filter_3d[:, None] ** 2)
  want_opacities = scene["opacities"] * np.sqrt(
      np.prod(scene["scales"] ** 2 / want_scales ** 2, axis=-1))
  np.testing.assert_allclose(np.asarray(scales), want_scales, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(opacities), want_opacities, rtol=1e-6)
  filtered = render_standard(scene, _camera(), filter_3d=np.pad(filter_3d, (0, 80)))
  manual = render_standard(dict(scene, scales=np.asarray(scales),
                                opacities=np.asarray(opacities)), _camera())
  np.testing.assert_allclose(np.asarray(filtered.rgb), np.asarray(manual.rgb), atol=1e-6)


@pytest.mark.parametrize("depth,visible", [(0.49, False), (0.51, True), (2.9, True),
                                           (3.1, False)])
def test_near_and_far_culling(depth, visible):
  """A centre outside [near, far] is culled outright, even if its footprint would reach in."""
  scene = _one_gaussian((20.5, 18.5), depth, (0.05, 0.05, 0.3), 0.9)
  out = render_standard(scene, _camera(near=0.5, far=3.0))
  assert (float(jnp.max(out.alpha)) > 0.5) == visible


def _stack(count, opacity, pixel_xy=(8.0, 8.0), scale=0.01):
  """`count` Gaussians on one line of sight at increasing depth (tile (0, 0) for the default)."""
  scenes = [_one_gaussian(pixel_xy, 1.0 + 0.1 * i, (scale,) * 3, opacity,
                          color=(i / count, 0.5, 1 - i / count)) for i in range(count)]
  return {k: np.concatenate([s[k] for s in scenes]) for k in scenes[0]}


def test_overflow_counts_dropped_overlaps_and_keeps_nearest():
  capacity = 8
  scene = _stack(12, 0.3)
  out = render_standard(scene, _camera(), tile_capacity=capacity)
  assert int(out.overflow) == 12 - capacity
  assert int(out.max_tile_load) == 12
  assert int(out.lossy_tiles) == 1  # α = 0.3 each: pixels are far from finished after 8
  nearest = {k: v[:capacity] for k, v in scene.items()}
  rgb, alpha, _ = reference_render_np(pad_scene(nearest), _camera())
  np.testing.assert_allclose(np.asarray(out.rgb), rgb, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out.alpha), alpha, atol=1e-6)


def test_overflow_behind_opaque_layers_is_not_lossy():
  """Every tile overflows, but every pixel is ended by the cut-off before the 8th Gaussian, so
  the dropped ones change nothing."""
  scene = _stack(12, 0.999, pixel_xy=(WIDTH / 2, HEIGHT / 2), scale=2.0)
  out = render_standard(scene, _camera(), tile_capacity=8)
  assert int(out.overflow) == 9 * (12 - 8)
  assert int(out.lossy_tiles) == 0
  rgb, _, _ = reference_render_np(pad_scene(scene), _camera())
  np.testing.assert_allclose(np.asarray(out.rgb), rgb, atol=1e-6)


def test_full_pair_buffer_drops_the_farthest_gaussians():
  """Three one-tile Gaussians in three tiles, room for two pairs: the farthest is dropped."""
  scenes = [_one_gaussian(xy, depth, (0.01,) * 3, 0.8)
            for xy, depth in (((8.0, 8.0), 2.0), ((24.0, 8.0), 1.0), ((8.0, 24.0), 1.5))]
  scene = {k: np.concatenate([s[k] for s in scenes]) for k in scenes[0]}
  out = render_standard(scene, _camera(), max_pairs=2)
  assert int(out.overflow) == 1 and int(out.lossy_tiles) == 1
  assert int(out.max_tile_load) == 1
  nearest = {k: v[1:] for k, v in scene.items()}
  rgb, _, _ = reference_render_np(pad_scene(nearest), _camera())
  np.testing.assert_allclose(np.asarray(out.rgb), rgb, atol=1e-6)
  assert float(out.alpha[8, 8]) == 0.0  # the farthest Gaussian (depth 2.0) is gone
