"""One process of a 2-process CPU training run (driven by tests/test_multiprocess_train.py).

  python tests/two_process_train.py PROCESS_ID PORT WORKDIR DATA_DIR OUT.npz [SIGTERM_AT]
Each process owns 2 CPU devices and feeds its half of every global batch. With SIGTERM_AT, each
process sends itself SIGTERM after that step (JAX's preemption service agrees on the step to
stop at); without it, the run trains (or resumes) to the end and writes its parameters.
"""
import os
import signal
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def main():
  pid, port, workdir, data_dir, out = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                       sys.argv[4], sys.argv[5])
  sigterm_at = int(sys.argv[6]) if len(sys.argv) > 6 else 0
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
  import numpy as np  # pylint: disable=import-outside-toplevel

  from atoken_jax import sharding  # pylint: disable=import-outside-toplevel
  from atoken_jax.train import loop as loop_lib  # pylint: disable=import-outside-toplevel
  from atoken_jax.train import task as task_lib  # pylint: disable=import-outside-toplevel
  from atoken_jax.train import tokenizer_task  # pylint: disable=import-outside-toplevel
  from tests import test_multiprocess_train as spec  # pylint: disable=import-outside-toplevel

  cfg = spec.config(data_dir)
  cfg.mesh.data = 4
  task = tokenizer_task.TokenizerTask(cfg, spec.process_local_data(pid, 2))
  t = loop_lib.Loop(task, workdir)
  if sigterm_at:
    t.hooks.append(task_lib.Hook(lambda loop, step, state: step == sigterm_at and os.kill(
        os.getpid(), signal.SIGTERM), every=1))
    try:
      t.run()
    except loop_lib.Preempted as e:
      print(f"preempted at step {e.args[0]}", flush=True)
      return
    raise SystemExit("the run was not preempted")
  state = t.run()
  params = sharding.to_host(state.params)
  if pid == 0:
    np.savez(out, *jax.tree.leaves(params), loss=np.float64(t.last_report["image_recon/loss"]),
             psnr=np.float64(task.last_eval["eval/images/psnr"]))


if __name__ == "__main__":
  main()
