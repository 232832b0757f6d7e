"""float64 checks of `rasterize`: images against the numpy dense reference to 1e-10, gradients
against autodiff of the jnp dense reference (means, scales, quats, opacities, colours,
background and the camera) and against central finite differences. One compiled program serves
every test."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atoken_jax import render
from tests.test_render_reference import (
  random_scene,
  reference_render_jax,
  reference_render_np,
  scene_camera,
)

NAMES = ("means", "scales", "quats_wxyz", "opacities", "colors", "background")
FILTER_2D = 0.2
WIDTH, HEIGHT = 40, 36
OPTIONS = dict(tile_capacity=64, block_size=16, tiles_per_batch=4)


def _scene(seed=7):
  scene = random_scene(seed, 30, spread=0.4, scale_range=(0.05, 0.2), opacity_range=(0.3, 0.95))
  params = {k: jnp.asarray(v, jnp.float64) for k, v in scene.items()}
  params["background"] = jnp.asarray([0.3, 0.6, 0.1], jnp.float64)
  return params


def _camera(far=100.0):
  camera = scene_camera(width=WIDTH, height=HEIGHT, eye=(0.2, -2.2, 0.5), far=far)
  as64 = lambda x: jnp.asarray(np.asarray(x), jnp.float64)
  return camera.replace(fx=as64(camera.fx), fy=as64(camera.fy), cx=as64(camera.cx),
                        cy=as64(camera.cy), world_to_camera=as64(camera.world_to_camera))


def _weights():
  rng = np.random.default_rng(0)
  return (rng.normal(size=(HEIGHT, WIDTH, 3)), rng.normal(size=(HEIGHT, WIDTH)),
          rng.normal(size=(HEIGHT, WIDTH)))


def _loss(images):
  """A fixed random weighting of rgb, alpha and depth (numpy or jnp)."""
  weights = _weights()
  return sum((w * x).sum() * scale for w, x, scale in zip(weights, images, (1.0, 1.0, 0.1)))


@functools.lru_cache(maxsize=None)
def _images_and_grads(kind):
  """Compiled (rgb, alpha, depth), (d loss / d params, d loss / d camera) for one renderer."""

  def render_fn(params, camera, mip):
    if kind == "dense":
      return reference_render_jax(**params, camera=camera, mip=mip, filter_2d=FILTER_2D)
    out = render.rasterize(**params, camera=camera, mip=mip, filter_2d=FILTER_2D, **OPTIONS)
    return out.rgb, out.alpha, out.depth

  def run(params, camera, mip):
    images, vjp = jax.vjp(lambda p, c: render_fn(p, c, mip), params, camera)
    weights = _weights()
    grads = vjp((jnp.asarray(weights[0]), jnp.asarray(weights[1]),
                 0.1 * jnp.asarray(weights[2])))
    return images, grads
  return jax.jit(run)


@pytest.mark.parametrize("mip", [False, True])
def test_images_match_numpy_reference_to_1e10(mip):
  with jax.enable_x64(True):
    params, camera = _scene(), _camera()
    (rgb, alpha, depth), _ = _images_and_grads("tiled")(params, camera, mip)
    assert rgb.dtype == jnp.float64
    scene = {k: np.asarray(v) for k, v in params.items() if k != "background"}
    want = reference_render_np(scene, camera, np.asarray(params["background"]), FILTER_2D, mip)
    for got, expected in zip((rgb, alpha, depth), want):
      np.testing.assert_allclose(np.asarray(got), expected, atol=1e-10)


@pytest.mark.parametrize("mip", [False, True])
def test_gradients_match_dense_reference_autodiff(mip):
  with jax.enable_x64(True):
    params, camera = _scene(), _camera()
    _, (got, got_camera) = _images_and_grads("tiled")(params, camera, mip)
    _, (want, want_camera) = _images_and_grads("dense")(params, camera, mip)
    for name in ("fx", "fy", "cx", "cy", "world_to_camera"):  # through the projection
      got[name], want[name] = getattr(got_camera, name), getattr(want_camera, name)
    for name in NAMES + ("fx", "fy", "cx", "cy", "world_to_camera"):
      scale = float(jnp.max(jnp.abs(want[name])))
      assert scale > 1e-6, f"{name}: gradient is zero, the check would be vacuous"
      np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want[name]),
                                 atol=1e-7 * scale, rtol=1e-6, err_msg=name)


def test_gradients_match_finite_differences():
  with jax.enable_x64(True):
    params, camera = _scene(), _camera()
    run = _images_and_grads("tiled")
    _, (grads, _) = run(params, camera, True)
    loss = lambda p: float(_loss([np.asarray(x) for x in run(p, camera, True)[0]]))
    rng = np.random.default_rng(1)
    eps = 1e-6
    for name in NAMES:
      direction = jnp.asarray(rng.normal(size=params[name].shape))
      numeric = (loss(dict(params, **{name: params[name] + eps * direction}))
                 - loss(dict(params, **{name: params[name] - eps * direction}))) / (2 * eps)
      analytic = float(jnp.sum(grads[name] * direction))
      assert abs(numeric - analytic) <= 1e-5 * max(1.0, abs(numeric)), (name, numeric, analytic)


def test_gradients_are_finite_with_culled_gaussians():
  """Behind-camera, beyond-far and zero-opacity Gaussians get zero, finite gradients."""
  with jax.enable_x64(True):
    params, camera = _scene(seed=8), _camera(far=3.0)
    eye = -camera.world_to_camera[:3, :3].T @ camera.world_to_camera[:3, 3]
    forward = camera.world_to_camera[2, :3]
    params["means"] = params["means"].at[0].set(eye - 0.5 * forward)  # behind the camera
    params["means"] = params["means"].at[1].set(eye + 5.0 * forward)  # beyond far
    params["opacities"] = params["opacities"].at[2].set(0.0)
    _, (grads, _) = _images_and_grads("tiled")(params, camera, True)
    for name, grad in grads.items():
      assert np.all(np.isfinite(np.asarray(grad))), name
    for index in (0, 1):
      for name in ("means", "scales", "quats_wxyz", "opacities", "colors"):
        assert float(jnp.abs(grads[name][index]).max()) == 0.0, (name, index)
    assert float(jnp.abs(grads["means"][3:]).max()) > 0.0
