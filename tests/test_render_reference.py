"""Tiled renderer == dense references that evaluate every Gaussian at every pixel.

Two references live here (other render tests import them):
  `reference_render_np`: float64 numpy, a literal loop over depth-sorted Gaussians.
  `reference_render_jax`: vectorised jnp (autodiff-able) for gradient checks.
Both do their own projection (no code shared with atoken_jax.render).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atoken_jax import render

ALPHA_MIN, ALPHA_MAX, T_MIN = 1.0 / 255.0, 0.999, 1e-4


def random_scene(seed, n, *, spread=0.6, scale_range=(0.02, 0.15), opacity_range=(0.1, 1.0)):
  """Random Gaussians around the origin: dict of float32 numpy arrays."""
  rng = np.random.default_rng(seed)
  return dict(
      means=rng.uniform(-spread, spread, (n, 3)).astype(np.float32),
      scales=rng.uniform(*scale_range, (n, 3)).astype(np.float32),
      quats_wxyz=rng.normal(size=(n, 4)).astype(np.float32),
      opacities=rng.uniform(*opacity_range, n).astype(np.float32),
      colors=rng.uniform(0, 1, (n, 3)).astype(np.float32))


# One renderer configuration shared by most render tests, so that they share one compiled program.
STANDARD_N = 100
STANDARD_OPTIONS = dict(tile_capacity=128, block_size=16, tiles_per_batch=4)


def pad_scene(scene, n=STANDARD_N):
  """Append invisible (zero-opacity) Gaussians up to n."""
  extra = n - len(scene["opacities"])
  assert extra >= 0
  filler = dict(means=np.zeros((extra, 3)), scales=np.full((extra, 3), 0.1),
                quats_wxyz=np.tile([1.0, 0, 0, 0], (extra, 1)), opacities=np.zeros(extra),
                colors=np.zeros((extra, 3)))
  return {k: np.concatenate([v, filler[k].astype(v.dtype)]) for k, v in scene.items()}


def render_standard(scene, camera, **kwargs):
  """`rasterize` with the shared options on `scene` padded to STANDARD_N Gaussians."""
  scene = pad_scene(scene)
  return render.rasterize(scene["means"], scene["scales"], scene["quats_wxyz"],
                          scene["opacities"], scene["colors"], camera,
                          **dict(STANDARD_OPTIONS, **kwargs))


def scene_camera(width=40, height=36, eye=(0.3, -3.0, 0.8), fov_deg=45.0, near=0.01, far=100.0):
  focal = render.focal_from_fov(fov_deg, width)
  return render.Camera(focal, focal * 1.1, 0.5 * width + 0.7, 0.5 * height - 1.3,
                       jnp.asarray(render.look_at(eye), jnp.float32), width, height,
                       near=near, far=far)


def _rotation_np(q):
  """Rotation from a quaternion (w, x, y, z) via R = (w² − v·v)I + 2vvᵀ + 2w[v]×."""
  q = q / np.linalg.norm(q)
  w, v = q[0], q[1:]
  cross = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
  return (w * w - v @ v) * np.eye(3) + 2 * np.outer(v, v) + 2 * w * cross


def _project_np(means, scales, quats, camera, filter_2d):
  """Per Gaussian (numpy float64): pixel mean, Σ2d, Σ', camera z."""
  w2c = np.asarray(camera.world_to_camera, np.float64)
  fx, fy, cx, cy = (float(getattr(camera, k)) for k in ("fx", "fy", "cx", "cy"))
  out = []
  for mean, scale, quat in zip(means, scales, quats):
    rotation = _rotation_np(quat)
    cov_world = rotation @ np.diag(scale ** 2) @ rotation.T
    x, y, z = w2c[:3, :3] @ mean + w2c[:3, 3]
    cov_cam = w2c[:3, :3] @ cov_world @ w2c[:3, :3].T
    z_safe = z if abs(z) > 1e-9 else 1e-9  # such a Gaussian is culled by `near` anyway
    jac = np.array([[fx / z_safe, 0, -fx * x / z_safe ** 2],
                    [0, fy / z_safe, -fy * y / z_safe ** 2]])
    cov2d = jac @ cov_cam @ jac.T
    out.append((np.array([fx * x / z_safe + cx, fy * y / z_safe + cy]), cov2d,
                cov2d + filter_2d * np.eye(2), z))
  return out


def reference_render_np(scene, camera, background=(0, 0, 0), filter_2d=0.0, mip=False,
                        return_ended=False):
  """Dense float64 render: returns rgb [H, W, 3], alpha [H, W], depth [H, W] (numpy), and with
  `return_ended` the [H, W] mask of pixels ended by the transmittance cut-off."""
  s = {k: np.asarray(v, np.float64) for k, v in scene.items()}
  width, height = camera.width, camera.height
  cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
  projected = _project_np(s["means"], s["scales"], s["quats_wxyz"], camera, filter_2d)
  transmittance = np.ones((height, width))
  done = np.zeros((height, width), bool)
  rgb = np.zeros((height, width, 3))
  depth_sum = np.zeros((height, width))
  for i in np.argsort([p[3] for p in projected], kind="stable"):
    mean2d, cov2d, cov_blur, z = projected[i]
    if not (float(camera.near) <= z <= float(camera.far)) or np.linalg.det(cov_blur) <= 0:
      continue
    opacity = s["opacities"][i]
    if mip:
      opacity *= np.sqrt(max(np.linalg.det(cov2d) / np.linalg.det(cov_blur), 0.0))
    conic = np.linalg.inv(cov_blur)
    dx, dy = cols - mean2d[0], rows - mean2d[1]
    sigma = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
    value = opacity * np.exp(-sigma)
    alpha = np.where(value >= ALPHA_MIN, np.minimum(value, ALPHA_MAX), 0.0)
    next_t = transmittance * (1 - alpha)
    done |= (alpha > 0) & (next_t <= T_MIN)
    use = (alpha > 0) & ~done
    weight = np.where(use, alpha * transmittance, 0.0)
    rgb += weight[..., None] * s["colors"][i]
    depth_sum += weight * z
    transmittance = np.where(use, next_t, transmittance)
  alpha = 1 - transmittance
  rgb += transmittance[..., None] * np.asarray(background, np.float64)
  depth = np.where(alpha > 0, depth_sum / np.where(alpha > 0, alpha, 1), 0.0)
  return (rgb, alpha, depth, done) if return_ended else (rgb, alpha, depth)


def reference_render_jax(means, scales, quats_wxyz, opacities, colors, camera,
                         background=(0.0, 0.0, 0.0), filter_2d=0.0, mip=False):
  """Dense vectorised render in jnp (differentiable). Returns (rgb, alpha, depth)."""
  q = quats_wxyz / jnp.linalg.norm(quats_wxyz, axis=-1, keepdims=True)
  w, v = q[:, 0], q[:, 1:]
  vx, vy, vz = v[:, 0], v[:, 1], v[:, 2]
  zero = jnp.zeros_like(w)
  cross = jnp.stack([jnp.stack([zero, -vz, vy], -1), jnp.stack([vz, zero, -vx], -1),
                     jnp.stack([-vy, vx, zero], -1)], -2)
  rotation = ((w * w - jnp.sum(v * v, -1))[:, None, None] * jnp.eye(3)
              + 2 * v[:, :, None] * v[:, None, :] + 2 * w[:, None, None] * cross)
  cov_world = jnp.einsum("nij,nj,nkj->nik", rotation, scales ** 2, rotation)
  w2c = jnp.asarray(camera.world_to_camera, means.dtype)
  cam = means @ w2c[:3, :3].T + w2c[:3, 3]
  cov_cam = jnp.einsum("ij,njk,lk->nil", w2c[:3, :3], cov_world, w2c[:3, :3])
  x, y, z = cam[:, 0], cam[:, 1], cam[:, 2]
  fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
  jac = jnp.stack([jnp.stack([fx / z, zero, -fx * x / z ** 2], -1),
                   jnp.stack([zero, fy / z, -fy * y / z ** 2], -1)], -2)
  cov2d = jnp.einsum("nij,njk,nlk->nil", jac, cov_cam, jac)
  cov_blur = cov2d + filter_2d * jnp.eye(2)
  det = lambda m: m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
  det_blur = det(cov_blur)
  opacity = jnp.where(mip, opacities * jnp.sqrt(det(cov2d) / det_blur), opacities)
  adjugate = jnp.stack([jnp.stack([cov_blur[:, 1, 1], -cov_blur[:, 0, 1]], -1),
                        jnp.stack([-cov_blur[:, 1, 0], cov_blur[:, 0, 0]], -1)], -2)
  conic = adjugate / det_blur[:, None, None]
  mean2d = jnp.stack([fx * x / z + cx, fy * y / z + cy], -1)
  visible = (z >= camera.near) & (z <= camera.far) & (det_blur > 0)

  cols, rows = jnp.meshgrid(jnp.arange(camera.width) + 0.5, jnp.arange(camera.height) + 0.5)
  pix = jnp.stack([cols.ravel(), rows.ravel()], -1).astype(means.dtype)
  d = pix[None] - mean2d[:, None]
  sigma = 0.5 * jnp.einsum("npi,nij,npj->np", d, conic, d)
  value = opacity[:, None] * jnp.exp(-sigma)
  alpha = jnp.where((value >= ALPHA_MIN) & visible[:, None], jnp.minimum(value, ALPHA_MAX), 0.0)
  order = jnp.argsort(jnp.where(visible, z, jnp.inf))
  alpha = alpha[order]
  inclusive = jnp.cumprod(1 - alpha, axis=0)
  exclusive = jnp.concatenate([jnp.ones_like(inclusive[:1]), inclusive[:-1]], 0)
  weights = jnp.where(inclusive > T_MIN, alpha * exclusive, 0.0)
  features = jnp.concatenate([colors, z[:, None]], -1)[order]
  out = weights.T @ features
  alpha_img = jnp.sum(weights, 0)
  rgb = out[:, :3] + (1 - alpha_img)[:, None] * jnp.asarray(background, means.dtype)
  depth = jnp.where(alpha_img > 0, out[:, 3] / jnp.where(alpha_img > 0, alpha_img, 1), 0.0)
  shape = (camera.height, camera.width)
  return rgb.reshape(shape + (3,)), alpha_img.reshape(shape), depth.reshape(shape)


def _assert_images_close(out, ref, atol):
  rgb, alpha, depth = ref
  np.testing.assert_allclose(np.asarray(out.rgb), rgb, atol=atol)
  np.testing.assert_allclose(np.asarray(out.alpha), alpha, atol=atol)
  np.testing.assert_allclose(np.asarray(out.depth), depth, atol=atol, rtol=2e-5)


@pytest.mark.parametrize("seed,filter_2d,mip", [(0, 0.0, False), (1, 0.3, True), (2, 0.1, False)])
def test_tiled_equals_dense_reference(seed, filter_2d, mip):
  """Several tiles, Gaussians crossing tile borders, heavy overlap that ends pixels early."""
  scene = random_scene(seed, 100, spread=0.4, scale_range=(0.05, 0.2), opacity_range=(0.5, 1.0))
  camera = scene_camera()
  background = (0.2, 0.5, 0.9)
  out = render_standard(scene, camera, background=background, filter_2d=filter_2d, mip=mip)
  assert int(out.overflow) == 0
  *ref, ended = reference_render_np(scene, camera, background, filter_2d, mip, return_ended=True)
  assert ended.sum() > 10  # some pixels hit the transmittance cut-off
  _assert_images_close(out, ref, atol=2e-5)


def test_tile_culling_keeps_faint_wide_tails():
  """Large, low-opacity Gaussians whose α ≥ 1/255 region spans many tiles: nothing cut off."""
  scene = random_scene(4, 12, scale_range=(0.2, 0.5), opacity_range=(0.01, 0.05))
  camera = scene_camera()
  out = render_standard(scene, camera)
  ref = reference_render_np(scene, camera)
  assert (ref[1] > 0).mean() > 0.5
  _assert_images_close(out, ref, atol=2e-6)


def test_jax_reference_matches_numpy_reference():
  with jax.enable_x64(True):
    scene = {k: v.astype(np.float64) for k, v in random_scene(5, 40).items()}
    camera = scene_camera()
    got = jax.jit(reference_render_jax)(**{k: jnp.asarray(v) for k, v in scene.items()},
                                        camera=camera, background=jnp.array([0.1, 0.2, 0.3]),
                                        filter_2d=0.2, mip=True)
    want = reference_render_np(scene, camera, (0.1, 0.2, 0.3), 0.2, True)
    for g, w in zip(got, want):
      np.testing.assert_allclose(np.asarray(g), w, atol=1e-10)
