"""Evaluation inputs: feature-network resizes, pixel protocols, folder and TFDS sources."""
import io

import ml_collections
import numpy as np
import pytest
from PIL import Image

from atoken_jax.eval import data as data_lib
from atoken_jax.features import resize


def test_half_pixel_resize_matches_torch_bilinear():
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(0).uniform(0, 1, (2, 37, 50, 3)).astype(np.float32)
  for size in ((299, 299), (20, 13)):  # up- and down-sampling (no antialias either way)
    want = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=size,
                                           mode="bilinear", align_corners=False)
    got = resize.resize_bilinear(x, size, "half_pixel")
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), atol=1e-5)  # f32 ulps


def test_tf1_resize_matches_the_legacy_formula():
  """TF1 resize_bilinear(align_corners=False): src = dst * in / out, written out pixel by pixel."""
  rng = np.random.default_rng(1)
  x = rng.uniform(-1, 1, (9, 14, 3)).astype(np.float64)
  out_h, out_w = 23, 5
  want = np.zeros((out_h, out_w, 3))
  for i in range(out_h):
    for j in range(out_w):
      sy, sx = i * 9 / out_h, j * 14 / out_w
      y0, x0 = int(np.floor(sy)), int(np.floor(sx))
      y1, x1 = min(y0 + 1, 8), min(x0 + 1, 13)
      dy, dx = sy - y0, sx - x0
      top = x[y0, x0] * (1 - dx) + x[y0, x1] * dx
      bot = x[y1, x0] * (1 - dx) + x[y1, x1] * dx
      want[i, j] = top * (1 - dy) + bot * dy
  got = resize.resize_bilinear(x.astype(np.float32), (out_h, out_w), "tf1")
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert np.allclose(resize.interp_matrix(7, 3, "tf1").sum(1), 1)


def test_protocols_crop_and_resize():
  img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 500, 3), np.uint8))
  assert data_lib.resize_center_crop(img, 256).shape == (256, 256, 3)
  assert data_lib.resize_square(img, 64).shape == (64, 64, 3)
  # 1080p is cropped to 1072 rows (paper §7); max_side crops further, keeping multiples of 16.
  assert data_lib.crop_to_multiple(np.zeros((4, 1080, 1920, 3))).shape == (4, 1072, 1920, 3)
  assert data_lib.crop_to_multiple(np.zeros((1080, 1920, 3)), 16, 500).shape == (496, 496, 3)
  # A centre crop of a left/right split image keeps both halves equally.
  split = np.zeros((100, 300, 3), np.uint8)
  split[:, 150:] = 255
  out = data_lib.resize_center_crop(Image.fromarray(split), 64, "box")
  assert abs(out[:, :32].mean() - (255 - out[:, 32:].mean())) < 2
  x = np.array([0, 1, 127, 128, 255], np.uint8)
  np.testing.assert_array_equal(data_lib.to_uint8(data_lib.to_unit_range(x)), x)


def test_folder_labels_captions_and_bad_files(tmp_path):
  for cls in ("dog", "hot_dog"):
    (tmp_path / cls).mkdir()
    for i in range(2):
      Image.new("RGB", (20, 30), (i * 100, 50, 50)).save(tmp_path / cls / f"{i}.jpg")
  (tmp_path / "dog" / "0.txt").write_text("a dog\n\nanother dog\n")
  (tmp_path / "hot_dog" / "broken.png").write_bytes(b"not a png")
  Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")  # no class folder: not labelled
  cfg = ml_collections.ConfigDict(dict(folder=str(tmp_path), limit=0, classnames=""))
  src = data_lib.open_source(cfg, "image", with_labels=True)
  assert src.classes == ["dog", "hot dog"] and src.labels == [0, 0, 1, 1, 1]
  skipped = []
  items = list(data_lib.iter_items(src, lambda r: data_lib.read_image(
      r, "resize", 16, "bilinear"), skipped))
  assert len(items) == 4 and len(skipped) == 1 and "broken.png" in skipped[0]
  assert items[0].captions == ("a dog", "another dog") and items[1].captions == ()
  assert items[0].pixels.shape == (16, 16, 3) and items[0].pixels.dtype == np.uint8
  names = tmp_path / "names.txt"
  names.write_text("Canis familiaris\nFrankfurter\n")
  cfg.classnames, cfg.limit = str(names), 3
  src = data_lib.open_source(cfg, "image", with_labels=True)
  assert src.classes == ["Canis familiaris", "Frankfurter"] and len(src) == 3


def test_tfds_labelled_source(tmp_path):
  """A TFDS ArrayRecord dataset (built here, no TensorFlow) as a zero-shot source."""
  import tensorflow_datasets as tfds

  class TinyLabelled(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    code_path = None

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3)),
          "label": tfds.features.ClassLabel(names=["cat", "sea_lion"])}))

    def _split_generators(self, dl_manager):
      return {"validation": self._generate_examples()}

    def _generate_examples(self):
      for i in range(4):
        buf = io.BytesIO()
        Image.new("RGB", (24, 16), (60 * i, 0, 0)).save(buf, "PNG")
        yield i, {"image": buf.getvalue(), "label": i % 2}

  builder = TinyLabelled(data_dir=str(tmp_path), file_format="array_record")
  builder.download_and_prepare()
  cfg = ml_collections.ConfigDict(dict(tfds=str(builder.data_path), split="validation",
                                       data_dir="", limit=3, classnames="", image_key="image",
                                       label_key="label", caption_key=""))
  src = data_lib.open_source(cfg, "image", with_labels=True)
  assert src.classes == ["cat", "sea lion"] and len(src) == 3
  items = list(data_lib.iter_items(src, lambda r: data_lib.read_image(r, "native", 0, "")))
  assert sorted(i.label for i in items) == sorted(src.labels)
  assert items[0].pixels.shape == (16, 16, 3)  # 24x16 cropped to multiples of 16
