"""A task's Grain pipeline on real files: batch contents, determinism, exact resume, disjoint
process shards, bad-data accounting and abort, long videos split into clips, mixed modalities."""
import json

import numpy as np
import pytest

from data_pipelines import BadDataError, build_task_iterator, default_task_config
from data_pipelines.text import ByteTokenizer
from tests.test_data_files import GOOD_IMAGES, make_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return make_folder(tmp_path_factory.mktemp("data"))


def image_cfg(folder, **overrides):
  cfg = default_task_config("image_recon", stage=1, preset="tiny")
  cfg.sources = (f"folder:{folder}/images",)
  cfg.batch_rows, cfg.row_len, cfg.max_samples_per_row = 2, 128, 8
  cfg.shard_index, cfg.shard_count = 0, 1
  cfg.image.min_side, cfg.image.max_side = 32, 96
  cfg.bad.min_records = 1000  # the folder is 1/7 bad on purpose
  for key, value in overrides.items():
    *path, last = key.split(".")
    target = cfg
    for p in path:
      target = target[p]
    target[last] = value
  return cfg


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    x, y = x.arrays(), y.arrays()
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batches_have_static_shapes_and_consistent_slot_metadata(folder):
  it = build_task_iterator(image_cfg(folder))
  tokenizer = ByteTokenizer()
  for batch in take(it, 3):
    b, l, s = 2, 128, 8
    # an image task's batches carry frame 0 of each patch (768 values)
    shapes = {"patches": (b, l, 768), "coords": (b, l, 4), "segment_ids": (b, l),
              "sample_ids": (b, l), "tile_index": (b, l), "token_index": (b, l),
              "pos_row_weights": (b, l, 16), "pos_col_weights": (b, l, 16),
              "sample_index": (b, s), "sample_lengths": (b, s), "modality": (b, s),
              "task": (b, s), "text_ids": (b, s, 64), "has_text": (b, s),
              "orig_shape": (b, s, 3),
              "attn_kv_counts": (b, 1), "attn_pairs": (b, 1, 1, 2)}  # one 128-token block
    assert {k: v.shape for k, v in batch.arrays().items()} == shapes
    used = batch.sample_index >= 0
    assert used.any()
    assert ((batch.modality == 0) == used).all() and ((batch.task == 0) == used).all()
    t, h, w = np.moveaxis(batch.orig_shape[used], -1, 0)
    assert (t == 1).all() and (h % 16 == 0).all() and (w % 16 == 0).all()
    assert (np.maximum(h, w) <= 96).all() and (np.minimum(h, w) >= 16).all()
    assert ((h // 16) * (w // 16) == batch.sample_lengths[used]).all()
    for r, k in zip(*np.nonzero(used)):
      assert (batch.sample_ids[r] == k + 1).sum() == batch.sample_lengths[r, k]
      caption = tokenizer.decode(batch.text_ids[r, k])
      assert batch.has_text[r, k] == bool(caption)
      if caption:
        assert caption.startswith("a picture number ")
    assert np.abs(batch.patches).max() <= 1.0
    assert (batch.patches[batch.segment_ids == 0] == 0).all()


def test_same_seed_same_batches_and_another_seed_differs(folder):
  a = take(build_task_iterator(image_cfg(folder)), 4)
  assert_batches_equal(a, take(build_task_iterator(image_cfg(folder)), 4))
  c = take(build_task_iterator(image_cfg(folder, seed=7)), 4)
  assert not all(np.array_equal(x.patches, y.patches) for x, y in zip(a, c))


def test_the_decoded_picture_cache_changes_no_batch(folder):
  """Epochs 2+ read decoded pictures from the cache (PNG, WebP, and JPEGs at their DCT
  reductions): every batch equals the one decoded afresh. (Clips: the video test below.)"""
  fresh = take(build_task_iterator(image_cfg(folder, decoded_cache_mb=0)), 12)
  for threads in (0, 2):  # read threads share the worker's cache
    cached = take(build_task_iterator(image_cfg(folder, decoded_cache_mb=64,
                                                **{"pack.read_threads": threads})), 12)
    assert_batches_equal(cached, fresh)


def test_restored_iterator_continues_with_the_batches_that_would_have_come(folder):
  it = build_task_iterator(image_cfg(folder))
  take(it, 3)
  state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
  assert state["pipeline"]["pending"], "the test should cover carried-over samples"
  expected = take(it, 4)
  fresh = build_task_iterator(image_cfg(folder))
  fresh.set_state(state)
  assert_batches_equal(take(fresh, 4), expected)
  assert fresh.metrics() == it.metrics()


def _epoch_ids(cfg):
  it, ids = build_task_iterator(cfg), []
  for batch in it:
    ids += batch.sample_index[batch.sample_index >= 0].tolist()
  return ids, it


def test_process_shards_are_disjoint_and_cover_the_dataset(folder):
  shards = [_epoch_ids(image_cfg(folder, num_epochs=1, shard_index=i, shard_count=2))
            for i in range(2)]
  (ids0, it0), (ids1, it1) = shards
  assert len(set(ids0)) == len(ids0) and len(set(ids1)) == len(ids1)
  assert not set(ids0) & set(ids1)
  bad = it0.stats.num_bad + it1.stats.num_bad
  assert len(ids0) + len(ids1) + bad == GOOD_IMAGES + 2
  assert it0.stats.records + it1.stats.records == GOOD_IMAGES + 2


def test_bad_files_are_skipped_and_counted_by_reason(folder):
  ids, it = _epoch_ids(image_cfg(folder, num_epochs=1))
  assert len(ids) == GOOD_IMAGES
  assert it.stats.bad == {"decode_error": 1, "empty_file": 1}
  names = {name.rsplit("/", 1)[-1] for name in it.stats.files}
  assert names == {"broken.jpg", "empty.png"}
  metrics = it.metrics()
  assert metrics["data/bad/decode_error"] == 1 and metrics["data/bad_fraction"] == 2 / 14


def test_too_much_bad_data_aborts_with_a_message_naming_the_files(folder):
  it = build_task_iterator(image_cfg(folder, **{"bad.max_fraction": 0.05,
                                               "bad.min_records": 5}))
  with pytest.raises(BadDataError, match=r"broken\.jpg|empty\.png") as err:
    take(it, 10)
  assert "bad.max_fraction" in str(err.value)


def video_cfg(folder, **kw):
  cfg = image_cfg(folder)
  cfg.name, cfg.modalities = "video_recon", ("video",)
  cfg.sources = (f"folder:{folder}/videos",)
  cfg.video.min_side = cfg.video.max_side = 64
  cfg.video.allow_upscale = False
  for k, v in kw.items():
    cfg.video[k] = v
  return cfg


def test_videos_clip_lengths_bad_videos_and_splitting_long_clips(folder):
  cfg = video_cfg(folder, max_frames=16, strides=(1,))
  cfg.row_len, cfg.num_epochs = 24, 1  # 48x64 frames = 12 tokens per latent frame
  ids, it = _epoch_ids(cfg)
  assert it.stats.bad == {"too_few_frames": 1, "decode_error": 1}
  # 12, 16 and 20 frames -> clips of 12, 16, 16 frames = 3, 4, 4 latent frames; rows hold 2.
  assert it.stats.notes == {"split_pieces": 3} and len(ids) == 6
  batches = [b for b in build_task_iterator(cfg)]
  shapes = np.concatenate([b.orig_shape[b.sample_index >= 0] for b in batches])
  assert (shapes[:, 0] % 4 == 0).all() and (shapes[:, 0] <= 8).all()
  assert (shapes[:, 1:] == [48, 64]).all()
  lengths = np.concatenate([b.sample_lengths[b.sample_index >= 0] for b in batches])
  assert (lengths <= 24).all() and (lengths == shapes[:, 0] // 4 * 12).all()


def test_the_decoded_clip_cache_changes_no_batch_nor_bad_data_count(folder):
  """Each video decodes whole once and later reads pick their frames from it; the short and
  the corrupt file are reported as without the cache."""
  runs = []
  for mb in (64, 0):
    cfg = video_cfg(folder, max_frames=8, strides=(1, 2, 3))
    cfg.row_len, cfg.decoded_cache_mb = 64, mb
    it = build_task_iterator(cfg)
    runs.append((take(it, 10), dict(it.stats.bad)))
  assert_batches_equal(runs[0][0], runs[1][0])
  assert runs[0][1] == runs[1][1] and runs[0][1].get("too_few_frames")


def test_understanding_videos_are_sampled_at_1_fps(folder):
  cfg = video_cfg(folder, fps=1.0, max_frames=64, long="truncate")
  cfg.task, cfg.num_epochs = "understanding", 1
  cfg.text.required = True
  batches = list(build_task_iterator(cfg))
  used = np.concatenate([b.orig_shape[b.sample_index >= 0] for b in batches])
  assert len(used) == 3 and (used[:, 0] == 4).all()  # 1.5-2.5 s clips: 4 frames spread
  assert all((b.task[b.sample_index >= 0] == 1).all() for b in batches)
  assert all(b.has_text[b.sample_index >= 0].all() for b in batches)


def test_one_task_can_mix_images_and_videos(folder):
  cfg = image_cfg(folder)
  cfg.modalities, cfg.sources = ("image", "video"), (f"folder:{folder}",)
  cfg.video.max_side = 64
  seen = np.concatenate([b.modality.ravel() for b in take(build_task_iterator(cfg), 6)])
  assert {0, 1} <= set(seen.tolist())
