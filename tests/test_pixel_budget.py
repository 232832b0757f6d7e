"""The pixel budget of tokenize and eval, and the Tokenizer API's refusals (ValueError, checked on
the host before anything runs)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from atoken_jax import pixel_budget
from atoken_jax.pixel_budget import PixelBudget


def test_fit_keeps_aspect_and_multiples_of_16_within_budget():
  for h, w, budget in [(4000, 6000, 1 << 20), (1080, 1920, 1 << 20), (5000, 20, 4096),
                       (333, 777, 50_000)]:
    fh, fw = pixel_budget.fit(h, w, budget)
    assert fh % 16 == 0 and fw % 16 == 0 and fh * fw <= max(budget, 256)
    if min(fh, fw) > 16:
      assert abs(fh / fw - h / w) / (h / w) < 0.05
      # as large as it can be: one more row of patches on each side would not fit
      assert (fh + 16) * (fw + 16) > budget
  assert pixel_budget.fit(4000, 6000, 1 << 20) == (832, 1248)


def test_6000x4000_photo_resized_or_refused(capsys):
  photo = Image.new("RGB", (6000, 4000), (10, 200, 30))
  b = PixelBudget()
  out = b.image(photo, "photo.jpg")
  assert out.size == (1248, 832) and out.getpixel((600, 400)) == (10, 200, 30)
  line = capsys.readouterr().err.strip()
  assert line.count("\n") == 0 and "photo.jpg" in line and "1248x832" in line
  assert b.resized == ["photo.jpg"] and "1 inputs" in b.notes()[0]
  small = Image.new("RGB", (64, 48))
  assert b.image(small, "s") is small and capsys.readouterr().err == ""
  with pytest.raises(ValueError, match="1048576"):
    PixelBudget(on_oversize="refuse").image(photo, "photo.jpg")
  assert PixelBudget(max_pixels=0).image(photo, "p") is photo  # 0 = no limit
  video = np.zeros((4, 480, 640, 3), np.uint8)
  assert PixelBudget(max_pixels=64 * 48).frames(video, "v").shape == (4, 48, 64, 3)
  for bad in (dict(max_pixels=100), dict(max_pixels=-1), dict(on_oversize="crop")):
    with pytest.raises(ValueError):
      PixelBudget(**bad)


def test_tokenize_reads_a_large_jpeg_reduced_and_names_its_stored_size(tmp_path, capsys):
  from atoken_jax import tokenize_cli
  path = str(tmp_path / "photo.jpg")
  Image.new("RGB", (3000, 2000), (40, 90, 160)).save(path, quality=90)
  x = tokenize_cli.read_media(path, PixelBudget(1 << 16))
  assert x.shape == (208, 304, 3) and -1.0 <= x.min() and x.max() <= 1.0
  (line,) = capsys.readouterr().err.splitlines()
  assert "3000x2000" in line and "304x208" in line  # the file's size, not the draft-decoded one
  with pytest.raises(ValueError, match="3000x2000 = 6000000 pixels"):
    tokenize_cli.read_media(path, PixelBudget(1 << 16, "refuse"))


def test_eval_native_protocol_resizes_or_skips(tmp_path, capsys):
  import io

  from atoken_jax.eval import data as data_lib
  from data_pipelines.decode import BadData
  buf = io.BytesIO()
  Image.new("RGB", (600, 400), (1, 2, 3)).save(buf, format="PNG")
  record = {"kind": "image", "bytes": buf.getvalue(), "name": "big.png"}
  got = data_lib.read_image(record, "native", 0, "bicubic", PixelBudget(64 * 64))
  assert got.shape == (48, 64, 3)
  assert "big.png" in capsys.readouterr().err
  with pytest.raises(BadData, match="over_pixel_budget"):  # a counted skip in the report
    data_lib.read_image(record, "native", 0, "bicubic", PixelBudget(64 * 64, "refuse"))
  # fixed-size protocols already bound the size
  assert data_lib.read_image(record, "resize_center_crop", 32, "bicubic",
                             PixelBudget(64 * 64, "refuse")).shape == (32, 32, 3)
  frames = {"kind": "video", "frames": np.zeros((4, 400, 600, 3), np.uint8), "name": "v"}
  assert data_lib.read_video(frames, 0, budget=PixelBudget(64 * 64)).shape == (4, 48, 64, 3)


@pytest.fixture(scope="module")
def tiny():
  from atoken_jax.tokenizer import Tokenizer
  return Tokenizer.init_random("tiny", seed=1)


def test_tokenize_resizes_over_budget_and_writes_outputs(tiny, tmp_path, capsys):
  from atoken_jax import cli
  tiny.save(str(tmp_path / "model"))
  Image.new("RGB", (600, 400), (200, 30, 30)).save(tmp_path / "photo.png")
  assert cli.main(["atoken", "tokenize", str(tmp_path / "photo.png"), "--checkpoint",
                   str(tmp_path / "model"), "--max-pixels=4096"]) == 0
  err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
  assert len(err) == 1 and "resized to 64x48" in err[0]
  with Image.open(tmp_path / "photo.png.recon.png") as rec:
    assert rec.size == (64, 48)


def test_tokenizer_api_refusals(tiny):
  img = np.zeros((32, 48, 3), np.float32)
  enc = tiny.encode([img])
  rec = tiny.decode(enc)
  assert rec.pixels(0).shape == (32, 48, 3) and rec.pixels(-1).shape == (32, 48, 3)
  nan_img = img.copy()
  nan_img[3, 4, 1] = np.nan
  refusals = [
      (lambda: tiny.encode(None), "non-empty list"),
      (lambda: tiny.encode([]), "empty list"),
      (lambda: tiny.encode(img), "array of shape"),
      (lambda: tiny.encode([img, None]), "input 1"),
      (lambda: tiny.encode([nan_img]), "non-finite"),
      (lambda: tiny.encode([np.full((32, 32, 3), np.inf, np.float32)]), "non-finite"),
      (lambda: tiny.decode(None), "Encoding"),
      (lambda: tiny.decode(img), "Encoding"),
      (lambda: rec.pixels(5), "out of range"),
      (lambda: rec.pixels(-2), "out of range"),
      (lambda: rec.pixels("0"), "int"),
  ]
  for fn, says in refusals:
    with pytest.raises(ValueError, match=says):
      fn()
  for bad_value in (np.nan, np.inf, -np.inf):
    latent = enc[0].latent.copy()
    latent[2, 1] = bad_value
    enc[0].latent = latent
    with pytest.raises(ValueError, match="sample 0: latent holds 1 NaN or Inf"):
      tiny.decode(enc)
  enc[0].latent = enc[0].latent[:, :-1]
  with pytest.raises(ValueError, match="latent must be"):
    tiny.decode(enc)
  enc[0].latent = None
  with pytest.raises(ValueError, match="latent must be a real numpy array"):
    tiny.decode(enc)
