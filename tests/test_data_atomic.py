"""Atomic dataset writes: `atoken data prepare` offers a dataset only when complete, a killed
or failing overwrite leaves the old one intact, and readers refuse shards that do not match
the manifest with one line naming the shard."""
import glob
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from atoken_jax import cli
from data_pipelines import dataset_dir, default_task_config, prepare, sources
from data_pipelines.arrayrecord_io import ShardWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(folder, n, level):
  os.makedirs(folder, exist_ok=True)
  for i in range(n):
    Image.fromarray(np.full((24, 32, 3), (level + 7 * i) % 256, np.uint8)).save(
        os.path.join(folder, f"img_{i:02d}.png"))
  return str(folder)


def _read_count(dst, modality="image"):
  cfg = default_task_config(f"{modality}_recon", preset="tiny")
  cfg.sources = (f"arrayrecord:{dst}",)
  return sum(len(p) for p in sources.resolve_parts(cfg))


def _snapshot(dst):
  return {os.path.relpath(p, dst): open(p, "rb").read()
          for p in glob.glob(os.path.join(dst, "**", "*"), recursive=True) if os.path.isfile(p)}


@pytest.fixture
def old_dataset(tmp_path):
  dst = str(tmp_path / "data")
  assert prepare.main([_images(tmp_path / "old", 3, 0), dst, "--no-progress"]) == 0
  return dst, _snapshot(dst)


def test_manifest_lists_every_shard_and_reads_back(old_dataset):
  dst, files = old_dataset
  manifest = json.loads(files["manifest.json"])
  assert manifest["format"] == 2 and manifest["counts"] == {"image": 3}
  listed = manifest["shards"]["image"]
  assert [s["file"] for s in listed] == ["part-00000.array_record"]
  assert listed[0]["bytes"] == len(files[os.path.join("image", "part-00000.array_record")])
  assert _read_count(dst) == 3
  parent = os.path.dirname(dst)
  assert not glob.glob(os.path.join(parent, ".data.building-*"))


def test_a_killed_overwrite_leaves_the_old_dataset_intact(tmp_path, old_dataset):
  dst, before = old_dataset
  new_src = _images(tmp_path / "new", 8, 100)
  script = textwrap.dedent(f"""
      import os, signal, sys
      sys.path.insert(0, {ROOT!r})
      from data_pipelines import arrayrecord_io, prepare
      write = arrayrecord_io.ShardWriter.write
      def dying_write(self, record):
        if self.num_records == 4:  # four one-record shards are on disk
          os.kill(os.getpid(), signal.SIGKILL)
        write(self, record)
      arrayrecord_io.ShardWriter.write = dying_write
      prepare.main([{new_src!r}, {dst!r}, "--overwrite", "--no-progress", "--shard-mb", "0"])
      """)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
  assert proc.returncode == -9, proc.stderr.decode()[-2000:]
  leftovers = glob.glob(os.path.join(os.path.dirname(dst), ".data.building-*"))
  assert len(leftovers) == 1 and len(glob.glob(os.path.join(leftovers[0], "image", "*"))) == 4
  assert _snapshot(dst) == before and _read_count(dst) == 3
  # The next overwrite completes, replaces the dataset and removes the dead build.
  assert prepare.main([new_src, dst, "--overwrite", "--no-progress"]) == 0
  assert _read_count(dst) == 8
  assert not glob.glob(os.path.join(os.path.dirname(dst), ".data.building-*"))


def test_a_failing_overwrite_leaves_the_old_dataset_and_no_temporary(tmp_path, old_dataset,
                                                                     monkeypatch):
  dst, before = old_dataset
  write = ShardWriter.write

  def failing_write(self, record):
    if self.num_records == 2:
      raise OSError(28, "No space left on device")
    write(self, record)

  monkeypatch.setattr(ShardWriter, "write", failing_write)
  with pytest.raises(OSError):
    prepare.prepare(_images(tmp_path / "new", 5, 50), dst, progress=False, overwrite=True)
  assert _snapshot(dst) == before and _read_count(dst) == 3
  assert not glob.glob(os.path.join(os.path.dirname(dst), ".data.building-*"))


def test_overwrite_without_atomic_exchange_still_replaces(tmp_path, old_dataset, monkeypatch):
  dst, _ = old_dataset
  monkeypatch.setattr(dataset_dir, "_exchange", lambda a, b: False)
  prepare.prepare(_images(tmp_path / "new", 5, 50), dst, progress=False, overwrite=True)
  assert _read_count(dst) == 5
  assert sorted(os.listdir(os.path.dirname(dst))) == [".data.lock", "data", "new", "old"]


def test_an_old_dataset_parked_by_an_interrupted_swap_is_put_back(tmp_path, old_dataset):
  dst, before = old_dataset
  parked = os.path.join(os.path.dirname(dst), ".data.old-abc123")
  os.rename(dst, parked)  # the state between the two renames of the fallback swap
  with pytest.raises(dataset_dir.DatasetError, match="already holds a prepared dataset"):
    dataset_dir.DatasetBuilder(dst)
  assert _snapshot(dst) == before and not os.path.exists(parked)


@pytest.mark.parametrize("damage,message", [
    ("truncate", r"shard image/part-00001\.array_record has \d+ bytes, the manifest says"),
    ("delete", r"shard image/part-00001\.array_record is missing"),
    ("extra", r"image/part-00009\.array_record is not in its manifest"),
])
def test_a_damaged_shard_is_refused_naming_it(tmp_path, damage, message):
  dst = str(tmp_path / "data")
  prepare.prepare(_images(tmp_path / "src", 3, 0), dst, progress=False, shard_mb=0)
  shard = os.path.join(dst, "image", "part-00001.array_record")
  if damage == "truncate":
    with open(shard, "r+b") as fh:
      fh.truncate(os.path.getsize(shard) // 2)
  elif damage == "delete":
    os.remove(shard)
  else:
    with open(os.path.join(dst, "image", "part-00009.array_record"), "wb") as fh:
      fh.write(open(shard, "rb").read())
  for location in (dst, os.path.join(dst, "image")):
    with pytest.raises(ValueError, match=message) as err:
      _read_count(location)
    assert "\n" not in str(err.value)


def test_a_manifest_that_claims_more_records_than_the_shards_hold_is_refused(tmp_path):
  # The pre-atomic failure: an old manifest over the partial shards of a killed overwrite.
  dst = str(tmp_path / "data")
  prepare.prepare(_images(tmp_path / "src", 3, 0), dst, progress=False)
  path = os.path.join(dst, "manifest.json")
  manifest = json.load(open(path))
  del manifest["shards"]  # a format-1 manifest
  manifest["counts"]["image"] = 300
  json.dump(manifest, open(path, "w"))
  with pytest.raises(ValueError, match=r"image/ holds 3 records, the manifest says 300"):
    _read_count(dst)


def test_prepare_refuses_bad_destinations_with_one_line(tmp_path, capsys, old_dataset):
  dst, before = old_dataset
  src = _images(tmp_path / "src", 2, 0)
  a_file = tmp_path / "file.txt"
  a_file.write_text("keep me")
  other = tmp_path / "mine"
  other.mkdir()
  (other / "notes.txt").write_text("keep me too")
  for target, expected in ((str(a_file), "is a file, not a folder"),
                           (dst, "already holds a prepared dataset (use --overwrite)"),
                           (str(other), "holds 'notes.txt', which is not part of a prepared")):
    argv = ["atoken", "data", "prepare", src, target, "--no-progress"]
    assert cli.main(argv + ["--overwrite"] if target == str(other) else argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err
    assert err.startswith("atoken data prepare: error: ")
  assert a_file.read_text() == "keep me" and (other / "notes.txt").read_text() == "keep me too"
  assert _snapshot(dst) == before


def test_nothing_usable_leaves_the_destination_alone(tmp_path, old_dataset, capsys):
  dst, before = old_dataset
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
  assert prepare.main([str(bad), dst, "--overwrite", "--no-progress"]) == 1
  assert "left as it was" in capsys.readouterr().err
  assert _snapshot(dst) == before
