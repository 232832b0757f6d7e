"""Compiled per-device memory of the So400m train step, 1 device vs 8 (fake CPU) devices with
FSDP, and its analytic FLOPs. Nothing is allocated: the step is lowered on abstract inputs and
compiled ahead of time; XLA's memory analysis gives parameter, optimiser, temporary bytes.

  python bench/bench_train_memory.py [--preset so400m] [--rows 8] [--row-len 1024]

The objective here is L1 + KL (the frozen perceptual / semantic networks add their own,
replicated, memory). The same global batch (`--rows` x `--row-len` tokens) on both meshes.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from atoken_jax import sharding  # noqa: E402
from atoken_jax.train import frozen, objective, step  # noqa: E402
from atoken_jax.train import tokenizer_state  # noqa: E402
from experiments import stage1_image  # noqa: E402


def compiled_memory(cfg, devices, rows, row_len, slots=8):
  mesh = sharding.make_mesh(data=1, fsdp=len(devices), devices=devices)
  t = tokenizer_state.state_template(cfg, mesh)
  spec = frozen.FrozenSpec(None, None, None)
  loss_fn = objective.make_loss_fn(t.model_cfg, cfg.loss, spec)
  fns = step.StepFns(loss_fn, t.optimizer, t.shardings,
                     lambda nd: sharding.batch_sharding(mesh, nd), t.abstract_state.params, {})
  sds = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt)
  batch = dict(patches=sds((rows, row_len, 3072), jnp.float32),
               coords=sds((rows, row_len, 4), jnp.int32),
               segment_ids=sds((rows, row_len), jnp.int32),
               sample_ids=sds((rows, row_len), jnp.int32),
               tile_index=sds((rows, row_len), jnp.int32),
               pos_row_weights=sds((rows, row_len, 16), jnp.float32),
               pos_col_weights=sds((rows, row_len, 16), jnp.float32),
               sample_index=sds((rows, slots), jnp.int32), modality=sds((rows, slots), jnp.int32),
               task=sds((rows, slots), jnp.int32))
  kind = objective.TaskKind("image", "reconstruction")
  batch_sh = {k: fns._batch_sharding(v.ndim) for k, v in batch.items()}  # pylint: disable=protected-access
  params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        t.abstract_state.params, t.shardings.params)
  micro = jax.jit(lambda g, p, b, r: step.micro_step(loss_fn, kind, g, None, p, {}, b, r),
                  in_shardings=(t.shardings.params, t.shardings.params, batch_sh,
                                fns.replicated),
                  out_shardings=(t.shardings.params, fns.replicated), donate_argnums=(0,))
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32)
  m = micro.lower(params, params, batch, rng).compile().memory_analysis()
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                       t.abstract_state, t.shardings)
  u = fns.update.lower(state, params, jax.ShapeDtypeStruct((), jnp.float32)).compile()
  um = u.memory_analysis()
  return t, m, um


def gib(x):
  return x / 2 ** 30


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--preset", default="so400m")
  p.add_argument("--rows", type=int, default=8)
  p.add_argument("--row-len", type=int, default=1024)
  a = p.parse_args()
  cfg = stage1_image.get_config(a.preset)
  cfg.model.dtype = "bfloat16"
  print(f"{a.preset}: global batch {a.rows} x {a.row_len} tokens, bf16 compute, f32 master "
        f"weights, scan_layers={cfg.model.scan_layers}, remat={cfg.model.remat}")
  results = {}
  for n in (1, 8):
    t, m, um = compiled_memory(cfg, jax.devices()[:n], a.rows, a.row_len)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t.abstract_state.params))
    state_b = sum(int(np.prod(x.shape)) * x.dtype.itemsize
                  for x in jax.tree.leaves(t.abstract_state)) / n
    results[n] = dict(state=state_b, micro_temp=m.temp_size_in_bytes,
                      micro_args=m.argument_size_in_bytes, update_temp=um.temp_size_in_bytes)
    print(f"  {n} device(s): params {n_params / 1e6:.0f}M; per device: train state "
          f"{gib(state_b):.2f} GiB, grad step args {gib(m.argument_size_in_bytes):.2f} GiB + "
          f"temporaries {gib(m.temp_size_in_bytes):.2f} GiB; update temporaries "
          f"{gib(um.temp_size_in_bytes):.2f} GiB")
  r1, r8 = results[1], results[8]
  tot = lambda r: r["state"] + r["micro_temp"] + r["micro_args"]
  print(f"per-device total (state + step args + temporaries) 1 / 8 devices: "
        f"{tot(r1) / tot(r8):.2f}x")
  mc = tokenizer_state.model_config_from(cfg)
  tokens = a.rows * a.row_len
  flops = 3 * tokens * mc.flops_per_token(a.row_len)
  print(f"analytic train-step FLOPs (fwd+bwd, {tokens} tokens, attention over {a.row_len}): "
        f"{flops / 1e12:.2f} TFLOP ({flops / tokens / 1e9:.2f} GFLOP/token)")


if __name__ == "__main__":
  main()
