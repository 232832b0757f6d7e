"""Gradients of `rasterize` (float64): against autodiff of the dense reference and against
central finite differences, for means, scales, quats, opacities, colours and background."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atoken_jax import render
from tests.test_render_reference import random_scene, reference_render_jax, scene_camera

NAMES = ("means", "scales", "quats_wxyz", "opacities", "colors", "background")
FILTER_2D = 0.2
WIDTH, HEIGHT = 24, 20


def _small_scene(seed=7):
  scene = random_scene(seed, 6, spread=0.35, scale_range=(0.08, 0.25), opacity_range=(0.3, 0.95))
  params = {k: jnp.asarray(v, jnp.float64) for k, v in scene.items()}
  params["background"] = jnp.asarray([0.3, 0.6, 0.1], jnp.float64)
  return params


def _camera(far=100.0):
  return scene_camera(width=WIDTH, height=HEIGHT, eye=(0.2, -2.2, 0.5), far=far)


def _tiled(params, camera, mip):
  out = render.rasterize(**params, camera=camera, mip=mip, filter_2d=FILTER_2D, tile_capacity=32,
                         block_size=8, tiles_per_batch=2)
  return out.rgb, out.alpha, out.depth


def _dense(params, camera, mip):
  return reference_render_jax(**params, camera=camera, mip=mip, filter_2d=FILTER_2D)


@functools.lru_cache(maxsize=None)
def _value_and_grad(kind):
  """Compiled (loss, grads) of a fixed random image-space weighting; one compile per kind."""
  render_fn = {"tiled": _tiled, "dense": _dense}[kind]
  rng = np.random.default_rng(0)
  weights = [rng.normal(size=(HEIGHT, WIDTH, 3)), rng.normal(size=(HEIGHT, WIDTH)),
             rng.normal(size=(HEIGHT, WIDTH))]

  def loss(params, camera, mip):
    rgb, alpha, depth = render_fn(params, camera, mip)
    return (jnp.sum(weights[0] * rgb) + jnp.sum(weights[1] * alpha)
            + 0.1 * jnp.sum(weights[2] * depth))
  return jax.jit(jax.value_and_grad(loss))


@pytest.mark.parametrize("mip", [False, True])
def test_gradients_match_dense_reference_autodiff(mip):
  with jax.enable_x64(True):
    params, camera = _small_scene(), _camera()
    _, got = _value_and_grad("tiled")(params, camera, mip)
    _, want = _value_and_grad("dense")(params, camera, mip)
    for name in NAMES:
      scale = float(jnp.max(jnp.abs(want[name])))
      assert scale > 1e-6, f"{name}: gradient is zero, the check would be vacuous"
      np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want[name]),
                                 atol=1e-7 * scale, rtol=1e-6, err_msg=name)


def test_gradients_match_finite_differences():
  with jax.enable_x64(True):
    params, camera = _small_scene(), _camera()
    value_and_grad = _value_and_grad("tiled")
    _, grads = value_and_grad(params, camera, True)
    rng = np.random.default_rng(1)
    eps = 1e-6
    for name in NAMES:
      direction = jnp.asarray(rng.normal(size=params[name].shape))
      plus, _ = value_and_grad(dict(params, **{name: params[name] + eps * direction}), camera,
                               True)
      minus, _ = value_and_grad(dict(params, **{name: params[name] - eps * direction}), camera,
                                True)
      numeric = (float(plus) - float(minus)) / (2 * eps)
      analytic = float(jnp.sum(grads[name] * direction))
      assert abs(numeric - analytic) <= 1e-5 * max(1.0, abs(numeric)), (name, numeric, analytic)


def test_gradients_are_finite_with_culled_gaussians():
  """Behind-camera, beyond-far and zero-opacity Gaussians get zero, finite gradients."""
  with jax.enable_x64(True):
    params, camera = _small_scene(seed=8), _camera(far=3.0)
    eye = -camera.world_to_camera[:3, :3].T @ camera.world_to_camera[:3, 3]
    forward = -camera.world_to_camera[2, :3]
    params["means"] = params["means"].at[0].set(eye + 0.5 * forward)  # behind the camera
    params["means"] = params["means"].at[1].set(eye - 5.0 * forward)  # beyond far
    params["opacities"] = params["opacities"].at[2].set(0.0)
    _, grads = _value_and_grad("tiled")(params, camera, True)
    for name, grad in grads.items():
      assert np.all(np.isfinite(np.asarray(grad))), name
    for index in (0, 1):
      for name in ("means", "scales", "quats_wxyz", "opacities", "colors"):
        assert float(jnp.abs(grads[name][index]).max()) == 0.0, (name, index)
    assert float(jnp.abs(grads["means"][3:]).max()) > 0.0
