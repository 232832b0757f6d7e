"""The bundled data's held-out split is disjoint from its training split; the PCA baseline is a
best rank-k linear bottleneck; a short training run's held-out PSNR rises well above its start
(photos at stage 1; clips at stage 2, slow)."""
import json
import os

import jax
import numpy as np
import pytest

from atoken_jax import tokenizer as tokenizer_lib
from atoken_jax.train import heldout
from atoken_jax.train import loop as loop_lib
from atoken_jax.train import tokenizer_task
from data_pipelines import arrayrecord_io, default_data, records, sources
from data_pipelines import config as data_config
from experiments import stage1_image, stage2_video


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
  # The cache test_data_default.py builds (one per run, shared by the xdist workers).
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  old = os.environ.get("ATOKEN_DATA_CACHE")
  os.environ["ATOKEN_DATA_CACHE"] = str(root / "atoken_default_data")
  yield default_data.ensure_default_dataset()
  if old is None:
    del os.environ["ATOKEN_DATA_CACHE"]
  else:
    os.environ["ATOKEN_DATA_CACHE"] = old


def _names(directory):
  src = arrayrecord_io.RecordSource(arrayrecord_io.find_shards(directory))
  return [records.decode_record(src[i])["name"].split(":")[1] for i in range(len(src))]


@pytest.mark.parametrize("modality", ["image", "video", "voxels"])
def test_heldout_split_is_disjoint_from_what_training_reads(bundled, modality):
  held = _names(os.path.join(bundled, default_data.HELDOUT, modality))
  assert held, "the held-out split must not be empty"
  want = default_data.HELDOUT_SHAPES if modality == "voxels" else default_data.HELDOUT_PHOTOS
  assert set(held) == set(want)
  # what the source spec "default" (every training task's default) resolves to
  cfg = data_config.resolve_task(stage1_image.get_config("tiny"), "image_recon")
  cfg.modalities = (modality,)
  parts = sources.resolve_parts(cfg)
  trained = [records.decode_record(p.dataset[i][2])["name"].split(":")[1]
             for p in parts for i in range(len(p.dataset))]
  assert trained and not set(trained) & set(held)
  cfg.sources = ("default:heldout",)  # evaluation reads the held-out split by its spec
  assert sorted(records.decode_record(p.dataset[i][2])["name"].split(":")[1]
                for p in sources.resolve_parts(cfg) for i in range(len(p.dataset))) == sorted(held)
  cfg.sources = ("default:test",)
  with pytest.raises(ValueError, match="default:heldout"):
    sources.resolve_parts(cfg)


def test_pca_is_exact_at_full_rank_and_a_best_rank_k_fit():
  rng = np.random.default_rng(0)
  rows = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12))
  np.testing.assert_allclose(heldout.PCA(rows, 12).reconstruct(rows), rows, atol=1e-4)
  pca = heldout.PCA(rows, 4)
  np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(4), atol=1e-6)
  err = np.sum((pca.reconstruct(rows) - rows) ** 2)
  q, _ = np.linalg.qr(rng.normal(size=(12, 4)))  # another rank-4 affine bottleneck
  centred = rows - rows.mean(0)
  assert err <= np.sum((centred @ q @ q.T - centred) ** 2)


def _heldout_before_and_after(cfg, workdir):
  """(held-out report of the freshly initialised model, the report the run wrote at its end)."""
  loop = loop_lib.Loop(tokenizer_task.TokenizerTask(cfg), str(workdir), devices=jax.devices()[:1])
  start = loop.initial_state()
  before, _ = heldout.evaluate(
      tokenizer_lib.Tokenizer(loop.task.model_cfg, jax.device_get(start.params["model"])), cfg)
  loop.run()
  with open(workdir / heldout.REPORT_FILE) as f:
    return before, json.load(f)


@pytest.mark.parametrize("steps,rows,min_gain_db", [
    (15, 1, 2.0),
    pytest.param(100, 2, 4.0, marks=pytest.mark.slow),  # the preset's batch
])
def test_short_run_raises_heldout_psnr_well_above_its_start(bundled, tmp_path, steps, rows,
                                                            min_gain_db):
  del bundled
  cfg = stage1_image.get_config("tiny")
  cfg.total_steps, cfg.ckpt_every, cfg.log_every = steps, 1000, 1000
  cfg.async_checkpoints, cfg.image_every = False, 0
  cfg.optim.warmup_steps = 2
  cfg.heldout_report.image_side = 64
  cfg.tasks.image_recon.data.batch_rows, cfg.data.num_workers = rows, 0
  before, after = _heldout_before_and_after(cfg, tmp_path)
  assert after["step"] == steps and os.path.exists(tmp_path / heldout.GRID_FILE)
  gain = after["image"]["model"]["psnr"] - before["image"]["model"]["psnr"]
  assert gain > min_gain_db, (before["image"], after["image"])
  assert after["image"]["pca"] == before["image"]["pca"]  # the baseline does not move


@pytest.mark.slow
def test_short_stage2_run_raises_heldout_clip_psnr_well_above_its_start(bundled, tmp_path):
  """The tiny stage-2 job (photos + clips, latent 48) learns clips: 40 steps from scratch."""
  del bundled
  cfg = stage2_video.get_config("tiny")
  cfg.total_steps, cfg.ckpt_every, cfg.log_every = 40, 1000, 1000
  cfg.async_checkpoints, cfg.image_every = False, 0
  cfg.optim.warmup_steps = 2
  cfg.heldout_report.update(image_side=64, clip_side=64)
  for task in ("image_recon", "video_recon"):
    cfg.tasks[task].data.batch_rows = 1
  before, after = _heldout_before_and_after(cfg, tmp_path)
  assert set(after) >= {"image", "video"} and after["latent_dim"] == 48
  gain = after["video"]["model"]["psnr"] - before["video"]["model"]["psnr"]
  assert gain > 2.0, (before["video"], after["video"])
  assert after["video"]["pca"] == before["video"]["pca"]  # the baseline does not move
