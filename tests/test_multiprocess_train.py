"""A 2-process `jax.distributed` training run on CPU equals the 1-process run, through picture
logs, a periodic evaluation, checkpoints, a SIGTERM and the resume after it."""
import os
import socket
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from atoken_jax.train import loop as loop_lib
from atoken_jax.train import tokenizer_task
from experiments import common
from tests import synthetic_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4


def config(data_dir):
  c = common.base("tiny")
  c.total_steps, c.log_every, c.ckpt_every, c.async_checkpoints = STEPS, 1, 2, False
  c.image_every = 1  # the picture log reads a batch-sharded reconstruction
  c.eval_every, c.eval_config = 2, os.path.join(data_dir, "eval_images.py")
  c.tasks = ml_collections.ConfigDict({"image_recon": {"accum_steps": 1}})
  c.loss.update(lpips=0.0, gram=0.0, clip=0.0, sem=0.0)
  # deterministic decoder input + gradient-proportional first updates (see test_train.py)
  c.update_from_flattened_dict({"optim.eps": 1.0, "optim.lr": 1.0, "optim.weight_decay": 0.0,
                                "optim.clip_norm": 0.0, "model.quantizer": "fsq",
                                "model.latent_dim": 48})
  return c


def write_eval_data(data_dir):
  images = os.path.join(data_dir, "images")
  os.makedirs(images, exist_ok=True)
  rng = np.random.default_rng(0)
  for i in range(2):
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        os.path.join(images, f"{i}.png"))
  with open(os.path.join(data_dir, "eval_images.py"), "w") as f:
    f.write("from experiments import eval_tiny\n"
            "def get_config(arg=''):\n"
            f"  c = eval_tiny.get_config({data_dir!r})\n"
            "  for name in c.tasks:\n"
            "    c.tasks[name].enabled = name == 'images'\n"
            "  return c\n")


class _Rows:
  """Rows [start, stop) of every global batch: one process's share."""

  def __init__(self, it, start, stop):
    self.it, self.start, self.stop = it, start, stop

  def __next__(self):
    batch = next(self.it)  # every Batch field leads with the row axis
    return jax.tree.map(lambda v: v[self.start:self.stop], batch)

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


def _two_processes(workdir, data_dir, out, *extra):
  port, env = _free_port(), {**os.environ, "PYTHONPATH": ROOT}
  procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "two_process_train.py"),
                             str(i), str(port), str(workdir), str(data_dir), str(out), *extra],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(2)]
  logs = [p.communicate(timeout=600)[0].decode(errors="replace") for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  return logs


@pytest.mark.slow  # fresh JAX processes compile the step three times: minutes on a busy box
def test_two_processes_with_pictures_eval_and_preemption_equal_one(tmp_path):
  if jax.device_count() < 4:
    pytest.skip("needs 4 fake devices")
  data_dir, work, out = tmp_path / "data", tmp_path / "two", tmp_path / "two.npz"
  write_eval_data(str(data_dir))
  logs = _two_processes(work, data_dir, out, "1")  # SIGTERM after step 1
  stops = {line for log in logs for line in log.splitlines() if line.startswith("preempted")}
  assert len(stops) == 1, logs  # both processes stopped at the same step
  stopped = int(stops.pop().split()[-1])
  assert 1 <= stopped < STEPS
  assert os.path.isdir(work / "checkpoints" / str(stopped))
  _two_processes(work, data_dir, out)  # resumes and finishes
  assert (work / "eval" / "2").is_dir() and list((work / "tb").glob("events.*"))

  cfg = config(str(data_dir))
  cfg.mesh.data = 4
  task = tokenizer_task.TokenizerTask(cfg, process_local_data(0, 1))
  one = loop_lib.Loop(task, str(tmp_path / "one"), devices=jax.devices()[:4])
  state = jax.device_get(one.run())
  two = np.load(out)
  assert float(two["loss"]) == pytest.approx(one.last_report["image_recon/loss"], rel=1e-5)
  assert float(two["psnr"]) == pytest.approx(task.last_eval["eval/images/psnr"], abs=1e-3)
  for i, leaf in enumerate(jax.tree.leaves(state.params)):
    np.testing.assert_allclose(two[f"arr_{i}"], np.asarray(leaf), rtol=1e-4, atol=1e-7)
