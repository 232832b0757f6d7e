"""The bundled default dataset builds on first use and feeds every task; the paper's task mixture
runs round-robin by ratio; configs are complete for every task and stage."""
import json
import os
import time

import numpy as np
import pytest

from data_pipelines import (
  TASKS,
  TaskSchedule,
  build_mixture,
  build_task_iterator,
  default_mixture_config,
  default_task_config,
  ensure_default_dataset,
)
from data_pipelines.config import STAGE_RATIOS


@pytest.fixture(scope="module")
def default_dir(tmp_path_factory):
  # One cache for all xdist workers of this run (the build is locked, so it happens once).
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  cache = str(root / "atoken_default_data")
  old = os.environ.get("ATOKEN_DATA_CACHE")
  os.environ["ATOKEN_DATA_CACHE"] = cache
  start = time.perf_counter()
  path = ensure_default_dataset()
  yield path, time.perf_counter() - start
  if old is None:
    del os.environ["ATOKEN_DATA_CACHE"]
  else:
    os.environ["ATOKEN_DATA_CACHE"] = old


def test_default_dataset_builds_once_into_the_cache(default_dir):
  path, seconds = default_dir
  assert path == os.environ["ATOKEN_DATA_CACHE"]
  with open(os.path.join(path, "manifest.json")) as fh:
    counts = json.load(fh)["counts"]
  assert counts["image"] >= 15 and counts["video"] >= 8 and counts["voxels"] >= 5
  assert seconds < 30
  start = time.perf_counter()
  assert ensure_default_dataset() == path and time.perf_counter() - start < 0.5  # cached


@pytest.mark.parametrize("name", TASKS)
def test_default_data_feeds_every_task(default_dir, name):
  del default_dir
  cfg = default_task_config(name, stage=3, preset="tiny")
  cfg.shard_index, cfg.shard_count = 0, 1
  it = build_task_iterator(cfg)
  batch = next(it)
  used = batch.sample_index >= 0
  modality = {"image": 0, "video": 1, "voxels": 2}[name.split("_")[0]]
  assert used.any() and (batch.modality[used] == modality).all()
  assert (batch.task[used] == (1 if "understand" in name else 0)).all()
  assert batch.has_text[used].all()  # every bundled sample has a caption
  assert it.stats.num_bad == 0


def test_mixture_follows_the_stage_ratios_round_robin(default_dir):
  del default_dir
  cfg = default_mixture_config(stage=2, preset="tiny")
  for task in cfg.tasks.values():
    task.shard_index, task.shard_count = 0, 1
    task.prefetch_batches = 0  # no batches prepared ahead that the test never reads
  mixed = build_mixture(cfg)
  names = [next(mixed)[0] for _ in range(9)]
  assert sorted(names) == sorted(["image_recon"] * 2 + ["video_understand"] + ["video_recon"] * 6)
  state = json.loads(json.dumps(mixed.get_state()))
  want = [next(mixed) for _ in range(3)]
  again = build_mixture(cfg)
  again.set_state(state)
  for (n1, b1), (n2, b2) in zip(want, [next(again) for _ in range(3)]):
    assert n1 == n2 and np.array_equal(b1.patches, b2.patches)


def test_schedule_spreads_tasks_evenly():
  s = TaskSchedule(STAGE_RATIOS[3])
  assert s.weights == {"image_recon": 2, "video_understand": 1, "video_recon": 4,
                       "voxels_understand": 1, "voxels_recon": 1}
  cycle = s.cycle
  assert len(cycle) == 9 and [s.task_at(k) for k in range(9, 18)] == cycle
  runs = max(len(r) for r in "".join("v" if c == "video_recon" else "." for c in cycle).split("."))
  assert runs <= 2  # video_recon never runs 3 times in a row


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_paper_configs_match_the_stage_table(stage):
  cfg = default_mixture_config(stage, preset="paper")
  assert dict(cfg.ratios) == STAGE_RATIOS[stage]
  image = cfg.tasks.image_recon.image
  assert (image.min_side, image.max_side) == (64, {1: 512, 2: 1024, 3: 2048, 4: 2048}[stage])
  if stage >= 2:
    vr, vu = cfg.tasks.video_recon.video, cfg.tasks.video_understand.video
    assert vr.strides == tuple(range(1, 13)) and vr.max_frames == 32 and vr.fps == 0
    assert vu.fps == 1.0 and vu.max_frames == 64
