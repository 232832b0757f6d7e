"""Sources: records, our ArrayRecord shards, `atoken data prepare`, TFDS data sources, folders of
meshes and NeRF renders -- all read through the same pipeline."""
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from data_pipelines import assets3d, build_task_iterator, default_task_config, prepare, records
from data_pipelines.arrayrecord_io import RecordSource, ShardWriter, find_shards
from data_pipelines.text import ByteTokenizer
from tests.test_data_files import GOOD_IMAGES, GOOD_VIDEOS, make_folder, make_images


def cfg_for(name, sources, **kw):
  cfg = default_task_config(name, preset="tiny")
  cfg.sources, cfg.num_epochs, cfg.shard_index, cfg.shard_count = sources, 1, 0, 1
  cfg.bad.min_records = 1000
  for k, v in kw.items():
    cfg[k] = v
  return cfg


def epoch(cfg):
  it = build_task_iterator(cfg)
  batches = list(it)
  return batches, it


def test_records_round_trip_and_reject_corrupt_bytes():
  coords = np.arange(12, dtype=np.uint8).reshape(4, 3)
  blob = records.encode_record("voxels", "x", {"coords": coords, "views": [b"a", b"bc"],
                                                "raw": b"\x00\x01"}, caption=["one", "two"])
  out = records.decode_record(blob)
  assert out["kind"] == "voxels" and out["caption"] == ["one", "two"]
  np.testing.assert_array_equal(out["coords"], coords)
  assert out["views"] == [b"a", b"bc"] and out["raw"] == b"\x00\x01"
  for bad in (blob[:-3], b"ATKR\x01" + blob[5:30], b"\x80\x04pickle", b"", blob[:9] + b"{]"):
    with pytest.raises(records.RecordError):
      records.decode_record(bad)


def test_shards_rotate_and_read_back_in_order(tmp_path):
  with ShardWriter(str(tmp_path), shard_bytes=10) as w:
    for i in range(5):
      w.write(records.encode_record("image", f"n{i}", {"bytes": bytes([i]) * 8}))
  assert len(find_shards(str(tmp_path))) == 5
  src = RecordSource(find_shards(str(tmp_path)))
  assert [records.decode_record(src[i])["name"] for i in range(5)] == [f"n{i}" for i in range(5)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  src = make_folder(tmp_path_factory.mktemp("src"))
  dst = str(tmp_path_factory.mktemp("dst"))
  code = prepare.main([src, dst, "--no-progress", "--views", "8", "--overwrite"])
  assert code == 0
  return src, dst


def test_prepare_converts_good_files_and_lists_the_skipped_ones(prepared, capsys):
  _, dst = prepared
  with open(os.path.join(dst, "manifest.json")) as fh:
    manifest = json.load(fh)
  assert manifest["counts"] == {"image": GOOD_IMAGES, "video": GOOD_VIDEOS, "voxels": 2}
  skipped = {os.path.basename(s["file"]): s["reason"] for s in manifest["skipped"]}
  assert skipped == {"broken.jpg": "decode_error", "empty.png": "empty_file",
                     "broken.mp4": "decode_error", "short.mp4": "too_few_frames",
                     "broken.glb": "decode_error", "nofaces.obj": "no_faces"}
  summary = prepare.summary(manifest)
  assert "skipped 6" in summary and "nofaces.obj" in summary


def test_prepared_shards_feed_every_modality_with_captions(prepared):
  _, dst = prepared
  batches, it = epoch(cfg_for("image_recon", (f"arrayrecord:{dst}",)))
  assert it.stats.num_bad == 0 and it.stats.samples == GOOD_IMAGES
  captions = {ByteTokenizer().decode(t) for b in batches for t in b.text_ids[b.has_text]}
  assert captions == {f"a picture number {i}" for i in range(0, GOOD_IMAGES, 2)}
  batches, it = epoch(cfg_for("video_recon", (f"arrayrecord:{dst}",)))
  assert it.stats.num_bad == 0 and it.stats.samples >= GOOD_VIDEOS
  batches, it = epoch(cfg_for("voxels_recon", (f"arrayrecord:{dst}",)))
  assert it.stats.num_bad == 0 and it.stats.samples == 2
  voxel_slots = np.concatenate([b.modality[b.sample_index >= 0] for b in batches])
  assert (voxel_slots == 2).all()
  coords = np.concatenate([b.coords[b.segment_ids > 0] for b in batches])
  assert (coords[:, 0] == 1).all() and coords[:, 1:].max() < 64  # (t=1, i, j, k)


def test_a_corrupt_record_in_a_shard_is_counted_not_fatal(tmp_path):
  good = io.BytesIO()
  Image.new("RGB", (48, 48), (10, 200, 30)).save(good, "PNG")
  with ShardWriter(str(tmp_path / "image")) as w:
    w.write(records.encode_record("image", "good", {"bytes": good.getvalue()}))
    w.write(b"ATKR\x01\xff\xff\xff\x00garbage")
    w.write(records.encode_record("image", "truncated", {"bytes": good.getvalue()})[:-40])
  _, it = epoch(cfg_for("image_recon", (f"arrayrecord:{tmp_path}",)))
  assert it.stats.samples == 1
  assert it.stats.bad == {"corrupt_record": 2}


def test_meshes_and_nerf_renders_in_a_folder_become_voxel_tokens(tmp_path):
  import trimesh
  mesh = trimesh.creation.icosphere(subdivisions=2)
  mesh.export(str(tmp_path / "ball.ply"))
  views, depths, w2c, fov = assets3d.render_views(mesh.vertices, mesh.faces, num_views=6)
  assets3d.write_nerf_views(str(tmp_path / "ball_renders"), views, depths, w2c, fov)
  with open(tmp_path / "ball_renders" / "caption.txt", "w") as fh:
    fh.write("a grey ball")
  cfg = cfg_for("voxels_understand", (f"folder:{tmp_path}",), row_len=8192)
  cfg.voxels.num_views = 6
  batches, it = epoch(cfg)
  assert it.stats.bad == {"missing_caption": 1}  # the .ply has no caption; understanding needs one
  lengths = np.concatenate([b.sample_lengths[b.sample_index >= 0] for b in batches])
  assert len(lengths) == 1 and lengths[0] > 1000


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  import tensorflow_datasets as tfds

  class TinyCaptioned(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    code_path = None  # no checksum file lookup (it needs importlib_resources for test modules)

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3)),
          "captions": tfds.features.Sequence({"text": tfds.features.Text()}),
          "id": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(6):
        buf = io.BytesIO()
        Image.new("RGB", (40 + 8 * i, 64), (30 * i, 90, 200)).save(buf, "PNG")
        yield i, {"image": buf.getvalue(), "id": f"img{i}",
                  "captions": {"text": [f"colour {i}", f"shade {i}"]}}

  root = tmp_path_factory.mktemp("tfds")
  builder = TinyCaptioned(data_dir=str(root), file_format="array_record")
  builder.download_and_prepare()
  return builder.data_path


def test_tfds_data_source_without_tensorflow(tfds_dir):
  cfg = cfg_for("image_understand", (f"tfds:{tfds_dir}:train",))
  cfg.tfds.caption_key, cfg.tfds.name_key = "captions/text", "id"
  batches, it = epoch(cfg)
  assert it.stats.samples == 6 and it.stats.num_bad == 0
  captions = [ByteTokenizer().decode(t) for b in batches for t in b.text_ids[b.has_text]]
  assert len(captions) == 6 and all(c.split()[0] in ("colour", "shade") for c in captions)


def test_images_alone_feed_a_plain_shard_directory(tmp_path):
  make_images(str(tmp_path / "in"), np.random.default_rng(3))
  prepare.prepare(str(tmp_path / "in"), str(tmp_path / "out"), progress=False)
  batches, it = epoch(cfg_for("image_recon", (f"arrayrecord:{tmp_path}/out/image",)))
  assert it.stats.samples == GOOD_IMAGES
