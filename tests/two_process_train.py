"""One process of a 2-process CPU training run (driven by tests/test_multiprocess_train.py).

  python tests/two_process_train.py PROCESS_ID PORT WORKDIR OUT.npz
Each process owns 2 CPU devices and feeds its half of every global batch.
"""
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def main():
  pid, port, workdir, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  from atoken_jax.train import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  from tests import test_multiprocess_train as spec  # pylint: disable=import-outside-toplevel

  cfg = spec.config()
  cfg.mesh.data = 4
  t = trainer_lib.Trainer(cfg, workdir, spec.process_local_data(pid, 2))
  state = t.run()
  params = multihost_utils.process_allgather(state.params, tiled=True)
  if pid == 0:
    leaves = jax.tree.leaves(params)
    np.savez(out, *[np.asarray(x) for x in leaves],
             loss=np.float64(t.last_report["image_recon/loss"]))


if __name__ == "__main__":
  main()
