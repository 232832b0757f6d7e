"""LPIPS network: shapes, metric properties, gradients, and the weight loaders' checks."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atoken_jax.perceptual import (LPIPS, load_lpips_params, packaged_linear_path,
                                   random_lpips_params, save_lpips_params)
from atoken_jax.perceptual.lpips import normalize_channels
from atoken_jax.perceptual.weights import expected_shapes, flatten, read_tensors


@pytest.fixture(scope="module")
def alex():
  return LPIPS(net="alex"), random_lpips_params("alex", seed=0)


def _noisy(seed, shape, sigma):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, shape).astype(np.float32)
  return x, np.clip(x + sigma * rng.normal(size=shape), -1, 1).astype(np.float32)


def test_param_layout_and_tap_shapes():
  vgg = expected_shapes("vgg16")
  assert vgg["backbone/conv1_1/kernel"] == (3, 3, 3, 64)
  assert vgg["backbone/conv5_3/kernel"] == (3, 3, 512, 512)
  assert [vgg[f"lin{k}/kernel"] for k in range(5)] == [(c, 1) for c in (64, 128, 256, 512, 512)]
  assert len([k for k in vgg if k.startswith("backbone/")]) == 26
  alex = expected_shapes("alexnet")
  assert alex["backbone/conv1/kernel"] == (11, 11, 3, 64)
  x = jnp.zeros((2, 64, 64, 3))
  for net, sizes in (("vgg", (64, 32, 16, 8, 4)), ("alex", (15, 7, 3, 3, 3))):
    shapes = jax.eval_shape(lambda: LPIPS(net=net).init_with_output(
        jax.random.PRNGKey(0), x, method=LPIPS.features)[0])
    assert [s.shape[1] for s in shapes] == list(sizes)
  with pytest.raises(ValueError, match="net must be"):
    expected_shapes("squeeze")


def test_metric_properties_and_noise_order(alex):
  model, params = alex
  fn = jax.jit(lambda a, b: model.apply({"params": params}, a, b))
  x, _ = _noisy(0, (2, 64, 64, 3), 0.0)
  rng = np.random.default_rng(1)
  noise = rng.normal(size=x.shape).astype(np.float32)
  d = [np.asarray(fn(x, np.clip(x + s * noise, -1, 1))) for s in (0.0, 0.05, 0.2, 0.6)]
  np.testing.assert_allclose(d[0], 0.0, atol=1e-7)
  assert np.all(d[1] < d[2]) and np.all(d[2] < d[3])
  y = np.clip(x + 0.2 * noise, -1, 1)
  np.testing.assert_allclose(fn(y, x), fn(x, y), rtol=1e-6)
  one = jax.jit(lambda a, b: model.apply({"params": params}, a, b))(x[1], y[1])
  assert one.shape == ()
  np.testing.assert_allclose(one, fn(x, y)[1], rtol=1e-5)


def test_gradients_finite_including_zero_feature_vectors(alex):
  model, params = alex
  x, y = _noisy(2, (1, 64, 64, 3), 0.3)
  g = jax.jit(jax.grad(lambda a: model.apply({"params": params}, a, y).sum()))(jnp.asarray(x))
  assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0
  f = jnp.zeros((1, 2, 2, 4)).at[0, 0, 0].set(jnp.array([3.0, 4.0, 0.0, 0.0]))
  np.testing.assert_allclose(normalize_channels(f)[0, 0, 0], [0.6, 0.8, 0, 0], rtol=1e-6)
  gz = jax.grad(lambda a: normalize_channels(a).sum())(f)
  assert np.isfinite(np.asarray(gz)).all()


def test_packaged_linear_weights_found_without_importing_lpips():
  pytest.importorskip("torch")
  already = "lpips" in sys.modules
  for net, chans in (("vgg", (64, 128, 256, 512, 512)), ("alex", (64, 192, 384, 256, 256))):
    path = packaged_linear_path(net)
    tensors, _ = read_tensors(path)
    assert [tensors[f"lin{k}.model.1.weight"].shape[1] for k in range(5)] == list(chans)
    assert min(v.min() for v in tensors.values()) >= 0
  assert already or "lpips" not in sys.modules


def test_random_params_fit_and_init_matches_layout():
  for net in ("vgg", "alex"):
    p = random_lpips_params(net, seed=1)
    assert {k: v.shape for k, v in flatten(p).items()} == expected_shapes(net)
    assert all(v.dtype == np.float32 for v in flatten(p).values())
    assert min(p[f"lin{k}"]["kernel"].min() for k in range(5)) >= 0


def test_loader_errors_and_npz_roundtrip(alex, tmp_path):
  _, params = alex
  with pytest.raises(ValueError, match="backbone_path"):
    load_lpips_params("alex")
  save_lpips_params(params, tmp_path / "a.npz", "alex")
  back = load_lpips_params("alex", path=tmp_path / "a.npz")
  jax.tree.map(np.testing.assert_array_equal, back, params)
  # our flat names are accepted as a backbone file too, with explicit linear layers
  npz = tmp_path / "a.npz"
  back2 = load_lpips_params("alex", backbone_path=npz, linear_path=npz)
  jax.tree.map(np.testing.assert_array_equal, back2, params)
  with pytest.raises(ValueError, match="do not fit"):
    load_lpips_params("vgg", path=tmp_path / "a.npz")
  save_lpips_params(params, tmp_path / "a.safetensors", "alex")
  with pytest.raises(ValueError, match="not vgg"):
    load_lpips_params("vgg", path=tmp_path / "a.safetensors")
  bad = flatten(params)
  bad["lin2/kernel"] = -np.abs(bad["lin2/kernel"])
  np.savez(tmp_path / "neg.npz", **bad)
  with pytest.raises(ValueError, match="negative"):
    load_lpips_params("alex", path=tmp_path / "neg.npz")
  with pytest.raises(ValueError, match="unknown weight file"):
    read_tensors(tmp_path / "weights.pkl")
