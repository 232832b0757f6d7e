"""The trainer: sharding invariance, accumulation, overfitting, exact resume, NaN skipping."""
import jax
import ml_collections
import numpy as np
import pytest

from atoken_jax.train import config_check
from atoken_jax.train import loop as loop_lib
from atoken_jax.train import tokenizer_task
from experiments import common
from tests import synthetic_data


def _cfg(steps=3, accum=1, **overrides):
  c = common.base("tiny")
  c.total_steps = steps
  c.log_every = 1
  c.ckpt_every = 1000
  c.async_checkpoints = False
  c.tasks = ml_collections.ConfigDict({"image_recon": {"accum_steps": accum}})
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 0
  c.optim.ema_decay = 0.99  # (the tiny preset's 0 makes the EMA the parameters)
  # the trainer's mechanics are tested on L1 + KL; test_full_objective_* covers the other terms
  c.loss.update(lpips=0.0, gram=0.0, clip=0.0, sem=0.0)
  c.update_from_flattened_dict(overrides)
  return c


def _loop(cfg, workdir, make_iterators, devices):
  return loop_lib.Loop(tokenizer_task.TokenizerTask(cfg, make_iterators), workdir, devices)


def _trainer(cfg, workdir, devices=None, **data_kw):
  return _loop(cfg, str(workdir), synthetic_data.factory(**data_kw),
               devices=devices or jax.devices()[:1])


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def _assert_trees_close(a, b, **tol):
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    np.testing.assert_allclose(x, y, **tol)


# For update comparisons: FSQ makes the decoder input deterministic (no posterior noise that
# depends on how a batch is split), and a large Adam eps makes the first update proportional to
# the gradient rather than to its sign, so tiny float differences stay tiny.
COMPARABLE = {"optim.eps": 1.0, "optim.lr": 1.0, "optim.weight_decay": 0.0,
              "optim.clip_norm": 0.0, "model.quantizer": "fsq", "model.latent_dim": 48}


def test_one_step_on_8_devices_equals_1_device(tmp_path):
  if jax.device_count() < 8:
    pytest.skip("needs 8 fake devices")
  t8 = _trainer(_cfg(1, **{"mesh.data": 2, "mesh.fsdp": 4}, **COMPARABLE), tmp_path / "8",
                jax.devices(), rows=8)
  s8 = t8.run()
  t1 = _trainer(_cfg(1, **COMPARABLE), tmp_path / "1", devices=jax.devices()[:1], rows=8)
  s1 = t1.run()
  leaf = s8.params["model"]["encoder"]["transformer"]["blocks_0"]["mlp"]["fc1"]["kernel"]
  assert len(leaf.sharding.device_set) == 8
  assert t8.last_report["image_recon/loss"] == pytest.approx(t1.last_report["image_recon/loss"],
                                                             rel=1e-5)
  assert int(s8.skipped) == int(s1.skipped) == 0
  _assert_trees_close(s8.params, s1.params, rtol=1e-4, atol=1e-7)
  _assert_trees_close(s8.opt_state, s1.opt_state, rtol=1e-4, atol=1e-9)


def test_accumulating_k_micro_batches_equals_one_batch_of_k(tmp_path):
  """2 micro-batches of 2 rows (the same rows) = one step on the 4 rows together (equal-size
  images give both halves the same token count)."""
  class Halves(synthetic_data.SyntheticImages):
    def __next__(self):
      whole = full.__next__() if self.index % 2 == 0 else self.pending
      half = jax.tree.map(lambda v: v[:2], whole)  # every Batch field leads with the row axis
      self.pending = jax.tree.map(lambda v: v[2:], whole)
      self.index += 1
      return half

  full = synthetic_data.SyntheticImages(seed=5, rows=4, slots=1, sizes=((32, 32),))
  opt = COMPARABLE
  one = jax.devices()[:1]
  t_acc = _loop(_cfg(1, accum=2, **opt), str(tmp_path / "acc"),
                              lambda cfg: {"image_recon": Halves(rows=4)}, devices=one)
  s_acc = t_acc.run()
  t_big = _loop(_cfg(1, **opt), str(tmp_path / "big"),
                              lambda cfg: {"image_recon": synthetic_data.SyntheticImages(
                                  seed=5, rows=4, slots=1, sizes=((32, 32),))}, devices=one)
  s_big = t_big.run()
  assert int(s_acc.skipped) == int(s_big.skipped) == 0
  _assert_trees_close(s_acc.params, s_big.params, rtol=1e-4, atol=1e-7)
  # the step did move the parameters (the EMA lags behind them by (1 - decay) of the move)
  assert max(np.abs(p - e).max() for p, e in zip(_leaves(s_big.params),
                                                 _leaves(s_big.ema_params))) > 1e-4


def test_tiny_model_overfits_a_small_batch(tmp_path):
  class Fixed(synthetic_data.SyntheticImages):
    def __next__(self):
      self.index = 0
      return super().__next__()

  cfg = _cfg(40, **{"optim.lr": 3e-3, "log_every": 40})
  t = _loop(cfg, str(tmp_path), lambda c: {"image_recon": Fixed(rows=2)},
                          devices=jax.devices()[:1])
  t.run()
  final_l1 = t.last_report["image_recon/l1"]
  # the synthetic pixels are tanh(N(0,1)): predicting 0 gives L1 ~ 0.6
  assert final_l1 < 0.6 / 3, final_l1


def test_sigterm_saves_and_resume_equals_uninterrupted(tmp_path):
  """SIGTERM during step 3 -> that step finishes, a checkpoint is written, Preempted is raised
  (the CLI exits 0); the next start resumes and ends bit-identical to an uninterrupted run."""
  straight = _trainer(_cfg(6), tmp_path / "straight").run()
  with pytest.raises(loop_lib.Preempted):
    _trainer(_cfg(6), tmp_path / "resumed", sigterm_at=2).run()
  t = _trainer(_cfg(6), tmp_path / "resumed")
  assert t.checkpointer.steps() == [3]
  resumed = t.run()
  for a, b in zip(_leaves(straight), _leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
  _trainer(_cfg(4, **{"ckpt_every": 2}), tmp_path).run()
  t = _trainer(_cfg(4), tmp_path)
  assert t.checkpointer.steps() == [2, 4]
  import glob
  import os
  for f in glob.glob(str(tmp_path / "checkpoints" / "4" / "state" / "**" / "*"),
                     recursive=True):
    if os.path.isfile(f) and os.path.getsize(f) > 100:
      with open(f, "r+b") as fh:
        fh.truncate(os.path.getsize(f) // 2)
  state = t.initial_state()
  assert int(jax.device_get(state.step)) == 2
  assert "skipping step 4: its state metadata cannot be read" in caplog.text


def test_non_finite_step_is_skipped_and_counted(tmp_path):
  state = _trainer(_cfg(3), tmp_path, nan_at=(1,)).run()
  assert int(jax.device_get(state.skipped)) == 1
  assert int(jax.device_get(state.step)) == 3
  assert all(np.isfinite(x).all() for x in _leaves(state.params))


def test_too_many_non_finite_steps_stop_training(tmp_path):
  with pytest.raises(FloatingPointError, match="in a row"):
    _trainer(_cfg(6, **{"max_consecutive_nonfinite": 2}), tmp_path,
             nan_at=range(100)).run()


@pytest.mark.parametrize("field, value, msg", [
    ("optim.lr", -1.0, "config.optim.lr: must be >= 0"),
    ("total_steps", 0, "config.total_steps"),
    ("model.remat", "some", "config.model: remat"),
    ("mesh.fsdp", 0, "config.mesh.fsdp"),
    ("optim.b2", 1.5, "config.optim.b2"),
])
def test_bad_config_values_fail_with_one_line_naming_the_field(field, value, msg):
  cfg = _cfg()
  cfg.update_from_flattened_dict({field: value})
  with pytest.raises(config_check.ConfigError) as e:
    config_check.validate(cfg)
  assert msg in str(e.value) and "\n" not in str(e.value)


def test_full_objective_trains_on_reconstruction_and_understanding_tasks(tmp_path):
  """Every loss term (L1, KL, LPIPS, Gram, CLIP-perceptual, distillation, sigmoid) is computed,
  finite, and the step updates the SigLIP logit terms only through the sigmoid loss."""
  cfg = _cfg(2, **{"loss.lpips": 10.0, "loss.gram": 1e3, "loss.clip": 1.0, "loss.sem": 1.0})
  cfg.tasks = ml_collections.ConfigDict({
      "image_recon": {"accum_steps": 1}, "image_understand": {"accum_steps": 1},
      "video_understand": {"accum_steps": 1, "modality": "video"}})

  def data(c):  # the image tasks' data configs ask for the perceptual resize weights
    canvas = {name: synthetic_data.perceptual_of(c, name) for name in c.tasks}
    assert canvas["image_recon"][0] and not canvas["video_understand"][0]
    return {"image_recon": synthetic_data.SyntheticImages(seed=1,
                                                          perceptual=canvas["image_recon"]),
            "image_understand": synthetic_data.SyntheticImages(
                seed=2, understanding=True, perceptual=canvas["image_understand"]),
            # images standing in for video clips: the sigmoid path is what is checked
            "video_understand": synthetic_data.SyntheticImages(seed=3, understanding=True,
                                                               modality=1)}

  t = _loop(cfg, str(tmp_path), data, devices=jax.devices()[:1])
  state = t.run()
  r = t.last_report
  for key in ("image_recon/l1", "image_recon/kl", "image_recon/lpips", "image_recon/gram",
              "image_recon/clip", "image_understand/distill", "video_understand/sigmoid"):
    assert key in r and np.isfinite(r[key]), key
  assert r["image_recon/lpips"] > 0 and r["image_understand/distill"] > 0
  assert int(state.skipped) == 0
  siglip = jax.device_get(state.params["siglip"])
  assert float(siglip["logit_bias"]) != cfg.loss.siglip_bias_init


def test_checkpoint_from_8_devices_restores_onto_1_and_logs_pictures(tmp_path):
  if jax.device_count() < 8:
    pytest.skip("needs 8 fake devices")
  cfg = _cfg(2, **{"mesh.data": 2, "mesh.fsdp": 4, "image_every": 1})
  saved = _trainer(cfg, tmp_path, jax.devices(), rows=8).run()
  one = _trainer(_cfg(2), tmp_path, rows=8)  # same workdir, one device, different sharding
  restored = one.initial_state()
  assert len(jax.tree.leaves(restored.params)[0].sharding.device_set) == 1
  for a, b in zip(_leaves(saved), _leaves(restored), strict=True):
    np.testing.assert_array_equal(a, b)
  events = list((tmp_path / "tb").glob("events.*"))
  assert events and b"reconstruction/image_recon" in events[0].read_bytes()


def test_sweep_lists_one_run_per_override(tmp_path):
  import subprocess
  import sys
  from atoken_jax.train import launch
  cfg = common.base("tiny")
  runs = launch.sweep_runs(cfg)
  assert [o for _, o in runs] == [{"optim.lr": 1e-3}, {"optim.lr": 3e-3}]
  assert len({name for name, _ in runs}) == 2
  out = subprocess.run([sys.executable, "-m", "atoken_jax.cli", "sweep",
                        "--config=experiments/stage1_image.py:tiny", f"--workdir={tmp_path}"],
                       capture_output=True, text=True, check=True).stdout
  lines = [l for l in out.splitlines() if " train " in l]
  assert len(lines) == 2 and "--config.optim.lr=0.003" in lines[1]
  assert str(tmp_path / runs[1][0]) in lines[1]


def test_periodic_evaluation_writes_reports_and_scalars(tmp_path):
  from PIL import Image
  images = tmp_path / "data" / "images"
  images.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for i in range(2):
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images / f"{i}.png")
  spec = tmp_path / "eval_images.py"
  spec.write_text(
      "from experiments import eval_tiny\n"
      "def get_config(arg=''):\n"
      f"  c = eval_tiny.get_config({str(tmp_path / 'data')!r})\n"
      "  for name in c.tasks:\n"
      "    c.tasks[name].enabled = name == 'images'\n"
      "  return c\n")
  t = _trainer(_cfg(2, **{"eval_every": 2, "eval_config": str(spec)}), tmp_path / "wd")
  t.run()
  assert 0 < t.task.last_eval["eval/images/psnr"] < 100
  assert (tmp_path / "wd" / "eval" / "2").is_dir()
