"""A 2-process `jax.distributed` training run on CPU equals the 1-process run."""
import os
import socket
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from atoken_jax.train import trainer as trainer_lib
from experiments import common
from tests import synthetic_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config():
  c = common.base("tiny")
  c.total_steps, c.log_every, c.async_checkpoints = 2, 1, False
  c.image_every = 1  # the picture log reads a batch-sharded reconstruction
  c.tasks = ml_collections.ConfigDict({"image_recon": {"accum_steps": 1}})
  c.loss.update(lpips=0.0, gram=0.0, clip=0.0, sem=0.0)
  # deterministic decoder input + gradient-proportional first updates (see test_train.py)
  c.update_from_flattened_dict({"optim.eps": 1.0, "optim.lr": 1.0, "optim.weight_decay": 0.0,
                                "optim.clip_norm": 0.0, "model.quantizer": "fsq",
                                "model.latent_dim": 48})
  return c


class _Rows:
  """Rows [start, stop) of every global batch: one process's share."""

  def __init__(self, it, start, stop):
    self.it, self.start, self.stop = it, start, stop

  def __next__(self):
    batch = next(self.it)
    return {k: v[self.start:self.stop] for k, v in batch.items()}

  def get_state(self):
    return self.it.get_state()

  def set_state(self, s):
    self.it.set_state(s)


def process_local_data(pid, num_processes, rows=4):
  per = rows // num_processes
  return lambda cfg: {"image_recon": _Rows(synthetic_data.SyntheticImages(seed=7, rows=rows,
                                                                          slots=1),
                                           pid * per, (pid + 1) * per)}


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # two fresh JAX processes compile the step: ~1 min alone, more on a busy box
def test_two_processes_equal_one(tmp_path):
  if jax.device_count() < 4:
    pytest.skip("needs 4 fake devices")
  port, out = _free_port(), tmp_path / "two.npz"
  env = {**os.environ, "PYTHONPATH": ROOT}
  procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "two_process_train.py"),
                             str(i), str(port), str(tmp_path / "two"), str(out)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(2)]
  logs = [p.communicate(timeout=600)[0].decode(errors="replace") for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  cfg = config()
  cfg.mesh.data = 4
  one = trainer_lib.Trainer(cfg, str(tmp_path / "one"), process_local_data(0, 1),
                            devices=jax.devices()[:4])
  state = jax.device_get(one.run())
  two = np.load(out)
  leaves = jax.tree.leaves(state.params)
  assert float(two["loss"]) == pytest.approx(one.last_report["image_recon/loss"], rel=1e-5)
  for i, leaf in enumerate(leaves):
    np.testing.assert_allclose(two[f"arr_{i}"], np.asarray(leaf), rtol=1e-4, atol=1e-7)
