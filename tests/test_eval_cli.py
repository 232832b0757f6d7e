"""`atoken eval` end to end: a tiny random model saved to disk, a tiny folder dataset of every
kind written here, every task of experiments/eval_tiny.py; JSON, markdown and pictures appear."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from atoken_jax import config_files
from atoken_jax.eval import cli, report as report_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _png(path, rng, size=(80, 72)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  base = rng.integers(0, 255, 3)
  ramp = np.linspace(0, 1, size[0])[None, :, None] * rng.integers(0, 255, 3)
  img = np.clip(base * 0.5 + ramp + rng.normal(0, 8, (size[1], size[0], 3)), 0, 255)
  Image.fromarray(img.astype(np.uint8)).save(path)


def _video(path, rng, frames=8, hw=(64, 80)):
  from atoken_jax.render.turntable import write_video
  os.makedirs(os.path.dirname(path), exist_ok=True)
  t = np.arange(frames)[:, None, None, None]
  x = (rng.integers(0, 200, (1, *hw, 3)) + 6 * t).clip(0, 255).astype(np.uint8)
  write_video(x, path, fps=8)


def write_dataset(root):
  """Every folder layout of experiments/eval_tiny.py, a few items each."""
  rng = np.random.default_rng(0)
  for i in range(3):
    _png(root / "images" / f"im{i}.png", rng)
  for cls in ("red_ball", "blue_box"):
    for i in range(2):
      _png(root / "classes" / cls / f"{i}.png", rng, (40, 40))
  for i in range(3):
    _png(root / "captioned" / f"c{i}.png", rng, (40, 48))
    (root / "captioned" / f"c{i}.txt").write_text(f"picture number {i}\nanother caption {i}\n")
  for i in range(2):
    _video(str(root / "videos" / f"v{i}.mp4"), rng)
    _video(str(root / "captioned_videos" / f"w{i}.mp4"), rng, frames=6, hw=(32, 32))
    (root / "captioned_videos" / f"w{i}.txt").write_text(f"a clip {i}")
  for cls in ("cube", "sphere"):
    d = root / "shapes" / cls
    d.mkdir(parents=True)
    for i in range(2):
      coords = rng.choice(64 ** 3, 20, replace=False)
      coords = np.stack(np.unravel_index(coords, (64, 64, 64)), 1).astype(np.int32)
      np.savez(d / f"{i}.npz", coords=coords, feats=rng.uniform(0, 1, (20, 768)).astype(
          np.float32))
  return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return write_dataset(tmp_path_factory.mktemp("eval_data"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  from atoken_jax.tokenizer import Tokenizer
  path = tmp_path_factory.mktemp("ckpt") / "tiny_model"
  Tokenizer.init_random("tiny", seed=3).save(str(path))
  return path


def test_cli_runs_every_task_and_writes_reports(dataset, checkpoint, tmp_path, capsys):
  out = tmp_path / "eval_out"
  rc = cli.main(["--config", os.path.join(REPO, "experiments", "eval_tiny.py") + f":{dataset}",
                 "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress",
                 "--config.tasks.images.data.limit=2"])
  assert rc == 0
  report = json.loads((out / "report.json").read_text())
  tasks = report["tasks"]
  assert set(tasks) == {"images", "videos", "classes", "captions", "video_captions", "shapes"}
  img = tasks["images"]
  assert img["count"] == 2 and len(img["per_item"]) == 2
  for k in ("psnr", "ssim", "lpips", "rfid"):
    assert np.isfinite(img["metrics"][k]), k
  vid = tasks["videos"]["metrics"]
  assert tasks["videos"]["count"] == 2 and all(np.isfinite(vid[k]) for k in vid)
  assert tasks["videos"]["per_item"][0]["frames"] == 8
  assert tasks["videos"]["per_item"][0]["size"] == [64, 64]  # max_side 64 crop of 64x80
  assert tasks["classes"]["count"] == 4 and 0 <= tasks["classes"]["metrics"]["top1"] <= 100
  assert tasks["classes"]["classes"] == ["blue box", "red ball"]
  cap = tasks["captions"]
  assert cap["captions"] == 6 and set(cap["metrics"]) == {"t2i", "i2t"}
  assert set(tasks["video_captions"]["metrics"]) == {"t2v", "v2t"}
  assert tasks["shapes"]["count"] == 4
  assert any("RANDOM" in n for n in report["notes"])
  md = (out / "report.md").read_text()
  assert "## Image reconstruction (Table 4 layout)" in md and "Images PSNR" in md
  assert "Videos PSNR/SSIM/LPIPS/rFVD" in md and "VideoCaptions T→V R@1/5/10" in md
  grid = Image.open(out / "images_grid.png")
  assert grid.size[1] == 2 * 64 + 3 * 4  # originals over reconstructions, 64 px crops
  gif = Image.open(out / "videos_0.gif")
  assert gif.n_frames == 8 and gif.size == (2 * 64 + 4, 64)
  assert "wrote" in capsys.readouterr().out
  assert report["files"]["pictures"] == [str(out / "images_grid.png"), str(out / "videos_0.gif")]


def test_markdown_formats_like_the_paper():
  report = {"name": "AToken-So/C", "tasks": {
      "in": {"kind": "image_recon", "title": "IN", "count": 1, "metrics": {
          "psnr": 29.7234, "ssim": 0.8481, "lpips": 0.0851, "rfid": 0.2093}},
      "tb": {"kind": "video_recon", "title": "TokenBench", "count": 1, "metrics": {
          "psnr": 36.07, "ssim": 0.94, "lpips": 0.135, "rfvd": None}}}}
  md = report_lib.markdown(report)
  assert "| AToken-So/C | 29.72 | .848 | .085 | .209 |" in md
  assert "| AToken-So/C | 36.07/.940/.135/– |" in md


def test_evaluator_runs_in_memory_and_repeats(dataset, checkpoint):
  """The periodic-evaluation path of training: params in memory, networks loaded once."""
  from atoken_jax.eval import Evaluator
  from atoken_jax.tokenizer import Tokenizer
  cfg = config_files.load(os.path.join(REPO, "experiments", "eval_tiny.py") + f":{dataset}")
  for name in ("videos", "video_captions", "shapes", "images"):
    cfg.tasks[name].enabled = False
  ev = Evaluator(cfg)
  tok = Tokenizer.load(str(checkpoint))
  first, second = ev(tok), ev(tok)
  assert set(first["tasks"]) == {"classes", "captions"} and "files" not in first
  assert first["tasks"]["captions"]["metrics"] == second["tasks"]["captions"]["metrics"]
  assert ev.resources.text is ev.resources.text  # built once


def test_checkpoint_forms(checkpoint, tmp_path):
  """A saved directory, an ml-atoken file with its YAML beside it, and clear errors."""
  import yaml

  from atoken_jax.interop import ml_atoken
  tok = cli.load_tokenizer(str(checkpoint))
  weights = tmp_path / "model.safetensors"
  tok.export_ml_atoken(str(weights))
  with open(tmp_path / "model.yaml", "w") as f:
    yaml.safe_dump({"model": {"model_cfg": {"arch_cfg": ml_atoken.arch_cfg_from_config(
        tok.cfg)}}}, f)
  again = cli.load_tokenizer(str(weights))
  assert again.cfg.encoder == tok.cfg.encoder and again.cfg.latent_dim == tok.cfg.latent_dim
  with pytest.raises(FileNotFoundError, match="neither a training workdir"):
    cli.load_tokenizer(str(tmp_path))
  with pytest.raises(FileNotFoundError):
    cli.load_tokenizer(str(tmp_path / "missing.safetensors"))
  cfg = config_files.load(os.path.join(REPO, "experiments", "eval_tiny.py"),
                          ["--config.tasks.images.size=32", "--config.name=abc"])
  assert cfg.tasks.images.size == 32 and cfg.name == "abc"


def test_paper_config_covers_every_protocol():
  from atoken_jax.eval import KINDS
  cfg = config_files.load(os.path.join(REPO, "experiments", "eval_paper.py"))
  assert {t.kind for t in cfg.tasks.values()} == set(KINDS)
  assert cfg.tasks.imagenet.size == 256 and cfg.tasks.imagenet.protocol == "resize_center_crop"
  assert set(config_files.load(os.path.join(REPO, "experiments", "eval_paper.py:video")).tasks) \
      == {"davis", "tokenbench"}
