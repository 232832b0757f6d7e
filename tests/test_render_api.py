"""Public API behaviour: clear errors before compiling, jit and vmap, SH colours."""
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atoken_jax import render
from atoken_jax.render import sh
from tests.test_render_reference import (
  STANDARD_OPTIONS,
  pad_scene,
  random_scene,
  render_standard,
  scene_camera,
)

_rasterize_module = importlib.import_module("atoken_jax.render.rasterize")


def _valid_args():
  scene = random_scene(0, 5)
  return [scene["means"], scene["scales"], scene["quats_wxyz"], scene["opacities"],
          scene["colors"], scene_camera()]


@pytest.mark.parametrize("index,value,match", [
    (0, np.zeros((5, 2)), "means"),
    (0, np.zeros((0, 3)), "means"),
    (1, np.zeros((4, 3)), "scales"),
    (2, np.zeros((5, 3)), "quats_wxyz"),
    (3, np.zeros((5, 1)), "opacities"),
    (4, np.zeros(5), "colors"),
    (4, np.zeros((5, 5, 3)), "SH colours"),
    (5, "camera", "Camera"),
])
def test_bad_shapes_raise_value_error_before_compiling(index, value, match):
  args = _valid_args()
  args[index] = value
  compiled_before = _rasterize_module._render._cache_size()
  with pytest.raises(ValueError, match=match):
    render.rasterize(*args)
  assert _rasterize_module._render._cache_size() == compiled_before


@pytest.mark.parametrize("kwargs,match", [
    (dict(background=(0.0, 0.0)), "background"),
    (dict(tile_capacity=0), "tile_capacity"),
    (dict(block_size=2.5), "block_size"),
    (dict(filter_3d=np.zeros(3)), "filter_3d"),
])
def test_bad_options_raise_value_error(kwargs, match):
  with pytest.raises(ValueError, match=match):
    render.rasterize(*_valid_args(), **kwargs)


def test_bad_camera_raises_value_error():
  args = _valid_args()
  camera = args[5]
  with pytest.raises(ValueError, match="world_to_camera"):
    render.rasterize(*args[:5], camera.replace(world_to_camera=jnp.eye(4)[:3]))
  stack = render.orbit_cameras(2, 2.0, 10.0, 40.0, 16, 16)
  with pytest.raises(ValueError, match="vmap"):
    render.rasterize(*args[:5], stack)
  with pytest.raises(ValueError, match="width"):
    render.rasterize(*args[:5], render.Camera(10.0, 10.0, 8.0, 8.0, jnp.eye(4), 16.5, 16))


def test_jit_and_vmap_over_cameras_match_single_views():
  scene = pad_scene(random_scene(2, 30, spread=0.4))
  params = {k: jnp.asarray(v) for k, v in scene.items()}
  cams = render.orbit_cameras(3, 3.0, 15.0, 45.0, 40, 36)

  @jax.jit
  def render_all(params, cams):
    return jax.vmap(lambda c: render.rasterize(**params, camera=c, **STANDARD_OPTIONS).rgb)(cams)

  batched = np.asarray(render_all(params, cams))
  assert batched.shape == (3, 36, 40, 3)
  for index in range(3):
    single = render_standard(scene, cams.view(index))
    np.testing.assert_allclose(batched[index], np.asarray(single.rgb), atol=1e-6)
  assert np.abs(batched[0] - batched[1]).max() > 0.05  # the views differ


def test_sh_degree_one_colours_match_precomputed_rgb():
  """SH coefficients [N, 4, 3] are evaluated from the camera centre like gsplat does."""
  scene = pad_scene(random_scene(3, 30, spread=0.4))
  camera = scene_camera()
  rng = np.random.default_rng(0)
  coeffs = rng.normal(0.0, 0.5, (len(scene["means"]), 4, 3)).astype(np.float32)
  out_sh = render.rasterize(**dict(scene, colors=coeffs), camera=camera, **STANDARD_OPTIONS)
  rgb = render.sh_to_rgb(jnp.asarray(coeffs), jnp.asarray(scene["means"]),
                         camera.camera_center)
  out_rgb = render_standard(dict(scene, colors=np.asarray(rgb)), camera)
  np.testing.assert_allclose(np.asarray(out_sh.rgb), np.asarray(out_rgb.rgb), atol=1e-6)


def test_sh_degree_zero_and_direction_convention():
  coeffs = jnp.asarray(np.random.default_rng(1).normal(size=(5, 1, 3)), jnp.float32)
  rgb = render.sh_to_rgb(coeffs, jnp.zeros((5, 3)) + 1.0, jnp.zeros(3))
  np.testing.assert_allclose(np.asarray(rgb), np.maximum(sh.SH_C0 * coeffs[:, 0] + 0.5, 0),
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(render.rgb_to_sh0(sh.SH_C0 * coeffs[:, 0] + 0.5)),
                             np.asarray(coeffs[:, 0]), rtol=1e-5, atol=1e-6)
  # Degree 1 in the 3DGS sign convention: −C1·y, +C1·z, −C1·x.
  basis = np.asarray(sh.sh_basis(jnp.asarray([[0.6, 0.0, 0.8]]), 1))[0]
  np.testing.assert_allclose(basis[1:], [0.0, sh.SH_C1 * 0.8, -sh.SH_C1 * 0.6], atol=1e-7)


def test_sh_basis_is_orthonormal_on_the_sphere():
  """∫ Y_i Y_j dΩ = δ_ij for all 16 functions of degree ≤ 3 (Gauss–Legendre × uniform φ)."""
  nodes, weights = np.polynomial.legendre.leggauss(16)
  phi = np.arange(32) * 2 * math.pi / 32
  cos_t, ph = np.meshgrid(nodes, phi, indexing="ij")
  sin_t = np.sqrt(1 - cos_t ** 2)
  dirs = np.stack([sin_t * np.cos(ph), sin_t * np.sin(ph), cos_t], -1).reshape(-1, 3)
  quad = (weights[:, None] * np.full_like(ph, 2 * math.pi / 32)).reshape(-1)
  basis = np.asarray(sh.sh_basis(jnp.asarray(dirs, jnp.float32), 3), np.float64)
  gram = basis.T @ (basis * quad[:, None])
  np.testing.assert_allclose(gram, np.eye(16), atol=1e-5)
