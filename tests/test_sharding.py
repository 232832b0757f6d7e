"""One forward on 8 fake CPU devices with a (data, fsdp) mesh equals the same forward on one."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from atoken_jax import config as config_lib
from atoken_jax import packing, sharding, tokens
from atoken_jax.model import atoken as atoken_model


def _batch(rows):
  rng = np.random.default_rng(0)
  seqs = [tokens.to_tokens(rng.uniform(-1, 1, (16 * (i % 3 + 1), 32, 3)).astype(np.float32))
          for i in range(rows)]
  return packing.pack(seqs, row_len=16, max_samples_per_row=2, num_rows=rows)


@pytest.mark.parametrize("mesh_shape", [
    dict(data=2, fsdp=4),
    pytest.param(dict(data=1, fsdp=4, tensor=2), marks=pytest.mark.slow)])
def test_sharded_forward_equals_single_device(mesh_shape):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (fake) devices")
  cfg = config_lib.model_config("tiny")
  model = atoken_model.AToken(cfg)
  mesh = sharding.make_mesh(**mesh_shape)
  rules = sharding.LOGICAL_AXIS_RULES
  inputs = _batch(8).for_model()

  boxed = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)},
                                            packing.empty_batch(1, 16, 1), "mean"))["params"]
  param_sharding = sharding.logical_to_sharding(nn.get_partition_spec(boxed), mesh, rules)
  init = lambda: nn.meta.unbox(model.init({"params": jax.random.key(0)},
                                          packing.empty_batch(1, 16, 1), "mean")["params"])
  params_1 = jax.jit(init)()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    params_8 = jax.jit(init, out_shardings=param_sharding)()
    batch_8 = jax.device_put(inputs, jax.tree.map(
        lambda v: sharding.batch_sharding(mesh, v.ndim), inputs))
    out_8 = jax.jit(lambda p, b: model.apply({"params": p}, b, "mean"))(params_8, batch_8)
  out_1 = jax.jit(lambda p, b: model.apply({"params": p}, b, "mean"))(params_1, inputs)

  # parameters really are distributed, and initialised identically
  qkv = params_8["encoder"]["transformer"]["blocks_0"]["attn"]["qkv"]["kernel"]
  assert len(qkv.sharding.device_set) == 8
  assert qkv.addressable_shards[0].data.shape[0] == 64 // mesh_shape["fsdp"]
  np.testing.assert_array_equal(np.asarray(qkv), np.asarray(
      params_1["encoder"]["transformer"]["blocks_0"]["attn"]["qkv"]["kernel"]))
  assert len(out_8["reconstruction"].sharding.device_set) == 8
  for k in ("features", "pooled", "mean", "logvar", "reconstruction"):
    np.testing.assert_allclose(np.asarray(out_8[k]), np.asarray(out_1[k]), rtol=1e-5, atol=1e-5)


def test_mesh_sizes_are_checked():
  with pytest.raises(ValueError, match="at most one"):
    sharding.make_mesh(data=-1, fsdp=-1)
  with pytest.raises(ValueError, match="devices"):
    sharding.make_mesh(data=3, fsdp=1, devices=jax.devices()[:4])
  mesh = sharding.make_mesh(data=-1, fsdp=2, devices=jax.devices()[:4])
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 1}
