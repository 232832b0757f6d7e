"""Restoring runs safely: resume refuses a changed model, retention keeps foreign checkpoints,
`load_run` falls back past unreadable steps, and export / eval / tokenize read a workdir."""
import glob
import importlib.util
import logging
import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from atoken_jax import cli
from atoken_jax.train import export as export_lib
from atoken_jax.train import loop as loop_lib
from atoken_jax.train import restore
from atoken_jax.train import resume
from atoken_jax.train import tokenizer_task
from experiments import common
from tests import synthetic_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE1 = os.path.join(REPO, "experiments", "stage1_image.py")
STAGE1_OVERRIDES = {"total_steps": 2, "ckpt_every": 1, "log_every": 1, "image_every": 0,
                    "async_checkpoints": False, "tasks.image_understand.accum_steps": 0,
                    "loss.lpips": 0.0, "loss.gram": 0.0, "loss.clip": 0.0, "loss.sem": 0.0}


def _stage1(**overrides):
  """experiments/stage1_image.py:tiny (bundled data), image reconstruction only, 2 steps."""
  spec = importlib.util.spec_from_file_location("_stage1_for_resume", STAGE1)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("tiny")
  c.update_from_flattened_dict({**STAGE1_OVERRIDES, **overrides})
  return c


def _cfg(**overrides):
  """The tiny model on synthetic images: 2 steps, a checkpoint after each."""
  c = common.base("tiny")
  c.total_steps, c.log_every, c.ckpt_every, c.image_every = 2, 1, 1, 0
  c.async_checkpoints = False
  c.tasks = ml_collections.ConfigDict({"image_recon": {"accum_steps": 1}})
  c.optim.warmup_steps = 0
  c.loss.update(lpips=0.0, gram=0.0, clip=0.0, sem=0.0)
  c.update_from_flattened_dict(overrides)
  return c


def _loop(cfg, workdir, make_iterators=None, devices=None, **kw):
  return loop_lib.Loop(tokenizer_task.TokenizerTask(cfg, make_iterators), str(workdir),
                       devices=devices, **kw)


def _train(cfg, workdir, **kw):
  return _loop(cfg, workdir, synthetic_data.factory(), devices=jax.devices()[:1], **kw).run()


def _files(workdir):
  """{path: (size, mtime)} of every file under WORKDIR/checkpoints."""
  return {f: (os.path.getsize(f), os.path.getmtime(f))
          for f in glob.glob(os.path.join(workdir, "checkpoints", "**"), recursive=True)
          if os.path.isfile(f)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A finished tiny run with checkpoints at steps 1, 2, 3."""
  workdir = tmp_path_factory.mktemp("run")
  _train(_cfg(total_steps=3), workdir)
  return str(workdir)


# ------------------------------------------------------------------ resume


def test_resume_with_a_changed_latent_refuses_naming_the_field_and_deletes_nothing(tmp_path):
  """Through the real CLI, on the bundled data: exit 1, one error line naming the field, and
  every checkpoint file still there, unchanged."""
  workdir = str(tmp_path / "run")
  _loop(_stage1(), workdir, devices=jax.devices()[:1]).run()
  before = _files(workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]
  argv = [sys.executable, "-m", "atoken_jax.cli", "train", f"--config={STAGE1}:tiny",
          f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in STAGE1_OVERRIDES.items()]
  out = subprocess.run(argv + ["--config.model.latent_dim=16", "--config.total_steps=4"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 1, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("atoken train: error: resuming ")
  assert "model.latent_dim (checkpoint 32, config 16)" in last
  assert "init.previous_stage" in last
  assert _files(workdir) == before
  # an explicit allowance cannot resume a different parameter layout either
  with pytest.raises(resume.ResumeRefused, match="parameter layout differs"):
    _loop(_stage1(**{"model.latent_dim": 16}), workdir, devices=jax.devices()[:1],
                        allow_config_change=("model.latent_dim",)).run()
  assert _files(workdir) == before


def test_resume_with_a_safe_change_continues_from_the_checkpoint(tmp_path, caplog):
  _train(_cfg(), tmp_path)
  caplog.set_level(logging.INFO, "atoken.train")
  state = _train(_cfg(total_steps=3, log_every=3, **{"optim.lr": 5e-4}), tmp_path)
  assert int(jax.device_get(state.step)) == 3
  assert "resumed from" in caplog.text and "at step 2" in caplog.text
  assert "total_steps (checkpoint 2, config 3)" in caplog.text


def test_a_run_saved_before_config_data_resumes_with_its_data_changes_logged(tmp_path, caplog):
  """A workdir whose saved config holds each task's full data (no config.data) resumes under
  today's stage-wide + per-task layout, and a changed data field is compared task by task."""
  from data_pipelines import config as data_config
  old = _stage1(total_steps=1, log_every=1)
  for name in old.tasks:
    old.tasks[name].data = data_config.resolve_task(old, name)
  del old["data"]
  _train(old, tmp_path)
  caplog.set_level(logging.INFO, "atoken.train")
  new = _stage1(total_steps=2, log_every=2, **{"data.seed": 5})
  assert int(jax.device_get(_train(new, tmp_path).step)) == 2
  assert "at step 1" in caplog.text
  assert "tasks.image_recon.data.seed (checkpoint 0, config 5)" in caplog.text


def test_check_splits_identity_fields_from_how_training_continues():
  layout = {"params": {"w": jax.ShapeDtypeStruct((2, 3), np.float32)}}
  saved = _cfg().to_dict()
  resume.check(1, "W", saved, layout, _cfg(**{"model.remat": "full", "total_steps": 9,
                                              "keep": 1, "init.use_ema": False}), layout)
  with pytest.raises(resume.ResumeRefused, match=r"model.dtype \(checkpoint 'float32', config "
                     r"'bfloat16'\).*--allow_config_change=model.dtype"):
    resume.check(1, "W", saved, layout, _cfg(**{"model.dtype": "bfloat16"}), layout)
  resume.check(1, "W", saved, layout, _cfg(**{"model.dtype": "bfloat16"}), layout,
               allow=("model.dtype",))
  wider = {"params": {"w": jax.ShapeDtypeStruct((2, 4), np.float32)}}
  with pytest.raises(resume.ResumeRefused, match=r"params.w: checkpoint \(2, 3\) float32, "
                     r"config \(2, 4\) float32"):
    resume.check(1, "W", saved, layout, _cfg(), wider, allow=("model.dtype",))


def test_cleanup_never_deletes_checkpoints_another_run_wrote(tmp_path):
  other, mine = tmp_path / "other", tmp_path / "mine"
  _train(_cfg(total_steps=1), other)
  _train(_cfg(keep=1), mine)
  assert sorted(os.listdir(mine / "checkpoints")) == ["2"]  # own retention: keep 1
  shutil.copytree(other / "checkpoints" / "1", mine / "checkpoints" / "1")
  _train(_cfg(keep=1, total_steps=4), mine)
  assert sorted(os.listdir(mine / "checkpoints")) == ["1", "4"]  # the foreign step 1 stays


# ------------------------------------------------------------------ load_run


def _garble(step_dir):
  for f in glob.glob(os.path.join(step_dir, "**"), recursive=True):
    if os.path.isfile(f):
      with open(f, "wb") as fh:
        fh.write(np.random.default_rng(0).bytes(max(os.path.getsize(f), 64)))


def _truncate_arrays(step_dir):
  for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True):
    if os.path.getsize(f) > 100:
      with open(f, "r+b") as fh:
        fh.truncate(os.path.getsize(f) // 2)


def test_load_run_falls_back_past_garbage_and_truncated_newest(run_dir, tmp_path, caplog, capfd):
  workdir = str(tmp_path / "w")
  shutil.copytree(run_dir, workdir)
  _garble(os.path.join(workdir, "checkpoints", "3"))
  _truncate_arrays(os.path.join(workdir, "checkpoints", "2"))
  caplog.set_level(logging.INFO, "atoken.restore")
  run = restore.load_run(workdir, ema=True)
  assert run.step == 1 and [s for s, _ in run.skipped] == [3, 2]
  lines = [r.getMessage() for r in caplog.records if r.name == "atoken.restore"]
  assert len(lines) == 1 and "using step 1 (EMA parameters)" in lines[0]
  assert "step 3: its config cannot be read" in lines[0]
  assert "step 2: its state" in lines[0] and "OUT_OF_RANGE" in lines[0]  # truncated
  assert "Event loop is closed" not in capfd.readouterr().err
  reference = restore.load_run(run_dir, step=1, ema=True)
  for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(reference.params), strict=True):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="step 3: its config cannot be read"):
    restore.load_run(workdir, step=3)


def test_resume_skips_unreadable_steps_but_never_starts_afresh_over_them(run_dir, tmp_path):
  workdir = str(tmp_path / "w")
  shutil.copytree(run_dir, workdir)
  for step in ("1", "2", "3"):
    _garble(os.path.join(workdir, "checkpoints", step))
  before = _files(workdir)
  with pytest.raises(resume.ResumeRefused, match="no checkpoint under .* can be read"):
    _train(_cfg(total_steps=4), workdir)
  assert _files(workdir) == before


def test_missing_workdir_is_one_error_and_creates_nothing(tmp_path, capsys):
  missing = tmp_path / "nope"
  assert cli.main(["atoken", "export", "--workdir", str(missing),
                   "--out", str(tmp_path / "x.safetensors")]) == 1
  err = capsys.readouterr().err
  assert err.startswith("atoken export: error: ") and "no such workdir" in err
  assert not missing.exists() and not (tmp_path / "x.safetensors").exists()
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="not a training workdir"):
    restore.load_run(str(empty))
  assert os.listdir(empty) == []


# ------------------------------------------------------------------ export / eval / tokenize


def test_export_eval_and_tokenize_read_a_workdir(run_dir, tmp_path, capsys):
  from PIL import Image

  from atoken_jax import tokenize_cli
  from atoken_jax.eval import cli as eval_cli
  run = restore.load_run(run_dir, step=2)
  out = str(tmp_path / "m.safetensors")
  assert export_lib.main(["--workdir", run_dir, "--step", "2", "--out", out]) == 0
  assert "(step 2, raw parameters)" in capsys.readouterr().out
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask
  exported = eval_cli.load_tokenizer(out)
  from_workdir = eval_cli.load_tokenizer(run_dir, step=2)
  for tree in (exported.params, from_workdir.params):
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(run.params["model"]), strict=True):
      np.testing.assert_array_equal(np.asarray(a), b)
  image = tmp_path / "img.png"
  Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), np.uint8)).save(image)
  assert tokenize_cli.main([str(image), "--checkpoint", run_dir, "--ema",
                            "--out-dir", str(tmp_path / "tok")]) == 0
  assert sorted(os.listdir(tmp_path / "tok")) == ["img.png.latents.safetensors",
                                                  "img.png.recon.png"]


def test_resume_with_a_new_task_refuses_naming_it(run_dir, tmp_path):
  workdir = str(tmp_path / "w")
  shutil.copytree(run_dir, workdir)
  cfg = _cfg(total_steps=4)
  cfg.tasks.image_extra = ml_collections.ConfigDict({"accum_steps": 1})
  t = _loop(cfg, workdir, synthetic_data.factory(), devices=jax.devices()[:1])
  with pytest.raises(resume.ResumeRefused, match=r"no data state for task\(s\) \['image_extra'\]"):
    t.initial_state()
