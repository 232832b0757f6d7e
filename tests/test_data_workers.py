"""Grain worker processes and real training processes: exact resume with 2 mp_prefetch workers,
and 2 jax.distributed processes reading disjoint shards whose union is the dataset."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from data_pipelines import build_task_iterator, default_task_config
from tests.test_data_files import GOOD_IMAGES, make_images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  make_images(str(root), np.random.default_rng(0))
  return str(root)


def cfg_for(images, **kw):
  cfg = default_task_config("image_recon", preset="tiny")
  cfg.sources, cfg.shard_index, cfg.shard_count = (f"folder:{images}",), 0, 1
  cfg.batch_rows, cfg.row_len, cfg.max_samples_per_row = 2, 128, 8
  cfg.image.max_side = 96
  cfg.bad.min_records = 1000
  for k, v in kw.items():
    cfg[k] = v
  return cfg


def test_resume_is_exact_with_two_worker_processes(images):
  it = build_task_iterator(cfg_for(images, num_workers=2))
  try:
    first = [next(it) for _ in range(3)]
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(3)]
  finally:
    it.close()
  ids = [i for b in first for i in b.sample_index[b.sample_index >= 0]]
  assert ids and set(ids) <= set(range(GOOD_IMAGES + 2))  # indices into the folder listing
  workers = state["pipeline"]["iterators_in_use_states"]  # one packing state per worker
  assert len(workers) == 2 and all(w["pending"] for w in workers)
  again = build_task_iterator(cfg_for(images, num_workers=2))
  try:
    again.set_state(state)
    for want, got in zip(expected, [next(again) for _ in range(3)]):
      want, got = want.arrays(), got.arrays()
      assert want.keys() == got.keys()
      for k in want:
        np.testing.assert_array_equal(want[k], got[k], err_msg=k)
  finally:
    again.close()


_CHILD = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {repo!r})
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.distributed.initialize("127.0.0.1:{port}", num_processes=2, process_id={pid})
    from data_pipelines import build_task_iterator, default_task_config
    cfg = default_task_config("image_recon", preset="tiny")
    cfg.sources, cfg.num_epochs = ("folder:{images}",), 1  # shard_index/count: -1 = jax's
    cfg.bad.min_records = 1000
    it = build_task_iterator(cfg)
    ids = [int(i) for b in it for i in b.sample_index[b.sample_index >= 0]]
    print(json.dumps({{"process": jax.process_index(), "ids": ids,
                      "bad": it.stats.num_bad}}))
    jax.distributed.shutdown()
""")


def test_two_jax_processes_read_disjoint_shards_covering_the_dataset(images):
  port = 20000 + os.getpid() % 20000
  procs = [subprocess.Popen(
      [sys.executable, "-c", _CHILD.format(repo=REPO, port=port, pid=pid, images=images)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for pid in range(2)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  outs.sort(key=lambda o: o["process"])
  a, b = set(outs[0]["ids"]), set(outs[1]["ids"])
  assert [o["process"] for o in outs] == [0, 1]
  assert not a & b
  assert len(a) + len(b) + outs[0]["bad"] + outs[1]["bad"] == GOOD_IMAGES + 2
