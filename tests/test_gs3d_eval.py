"""3D evaluation: the reported PSNR / SSIM / LPIPS are those of the rendered views, recomputed
here independently (skimage, the LPIPS module); the `atoken gs` CLI trains, evaluates, exports."""
import json
import os

import jax
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from atoken_jax import perceptual
from atoken_jax.gaussian_decoder import GaussianDecoder
from atoken_jax.gs3d import evaluate, objective, procedural
from atoken_jax.gs3d import views as views_lib


@pytest.fixture(scope="module")
def setup():
  asset = procedural.procedural_asset("torus", num_views=5, size=64)
  gdec = GaussianDecoder.init_random("tiny", num_gaussians=4, attention="masked")
  out = gdec.params["out_layer"]
  rng = np.random.default_rng(1)
  out["kernel"] = rng.normal(0, 0.05, out["kernel"].shape).astype(np.float32)
  out["bias"] = rng.normal(0, 0.5, out["bias"].shape).astype(np.float32)
  return asset, gdec, perceptual.random_lpips_params("alex", seed=0)


def test_eval_numbers_equal_metrics_computed_on_the_renders(setup):
  asset, gdec, lp = setup
  res = evaluate.evaluate_asset(gdec, asset, lpips_params=lp, lpips_net="alex",
                                keep_renders=True)
  assert res["views"] == 5 and res["renders"].shape == (5, 64, 64, 3)
  # the renders are the decoder's Gaussians seen by the stored cameras (5 views, chunks of 4)
  feats, coords = views_lib.ground_truth_voxels(asset)
  direct = jax.jit(objective.render_gaussians)(gdec(feats, coords),
                                               views_lib.cameras_from_asset(asset))
  np.testing.assert_allclose(res["renders"], np.asarray(direct.rgb), atol=1e-6)
  pred = np.round(np.clip(res["renders"], 0, 1) * 255) / 255
  target = asset.views / 255.0
  psnr = [peak_signal_noise_ratio(t, p, data_range=1.0) for p, t in zip(pred, target)]
  ssim = [structural_similarity(t, p, gaussian_weights=True, sigma=1.5, data_range=1.0,
                                use_sample_covariance=False, channel_axis=-1)
          for p, t in zip(pred, target)]
  lpips = jax.jit(lambda a, b: perceptual.lpips_distance(lp, a, b, net="alex"))(
      pred * 2 - 1, target * 2 - 1)
  np.testing.assert_allclose(res["per_view"]["psnr"], psnr, rtol=1e-4)
  np.testing.assert_allclose(res["per_view"]["ssim"], ssim, atol=1e-4)
  np.testing.assert_allclose(res["per_view"]["lpips"], lpips, rtol=1e-4)
  assert res["psnr"] == pytest.approx(np.mean(psnr), rel=1e-4) and 5 < res["psnr"] < 40
  assert res["ssim"] == pytest.approx(np.mean(ssim), abs=1e-4)
  assert res["lpips"] == pytest.approx(float(np.mean(lpips)), rel=1e-4)
  two = evaluate.summarize([res, {**res, "views": 1, "psnr": 0.0,
                                  "per_view": {k: [0.0] for k in res["per_view"]}}])
  assert two["views"] == 6 and two["psnr"] == pytest.approx(np.sum(psnr) / 6)
  assert two["psnr_asset_mean"] == pytest.approx(np.mean(psnr) / 2)


@pytest.mark.slow
def test_eval_through_a_tokenizer(setup):
  from atoken_jax.tokenizer import Tokenizer  # pylint: disable=import-outside-toplevel
  asset, gdec, _ = setup
  tok = Tokenizer.init_random("tiny", latent_dim=16)
  res = evaluate.evaluate_asset(gdec, asset, tokenizer=tok, view_ids=[0, 2])
  assert res["views"] == 2 and np.isfinite(res["psnr"]) and "lpips" not in res
  feats, _ = evaluate.decoder_input(asset, tok)
  assert feats.shape == (len(asset.coords), 768)


@pytest.mark.slow
def test_cli_train_eval_export(tmp_path, capsys):
  from atoken_jax.gs3d import cli  # pylint: disable=import-outside-toplevel
  from data_pipelines import writers  # pylint: disable=import-outside-toplevel
  from data_pipelines.arrayrecord_io import ShardWriter  # pylint: disable=import-outside-toplevel
  data = tmp_path / "voxels"
  with ShardWriter(str(data)) as w:
    for shape in ("cone", "box"):
      w.write(writers.voxel_record(shape, procedural.procedural_asset(shape, size=64)))
  work, spec = str(tmp_path / "run"), f"arrayrecord:{data}"
  assert cli.main(["train", "--config=experiments/gs_decoder_alone.py:tiny", f"--workdir={work}",
                   f"--config.data.sources=('{spec}',)", "--config.total_steps=2",
                   "--config.gs.attention=masked", "--config.data.row_len=2048",
                   "--config.loss.lpips_net=alex", "--config.mesh.num_devices=1"]) == 0
  assert os.path.isdir(os.path.join(work, "checkpoints", "2"))
  report = str(tmp_path / "report.json")
  assert cli.main(["eval", f"--workdir={work}", f"--data={spec}", "--random-lpips",
                   "--lpips-net=alex", f"--out={report}"]) == 0
  with open(report) as f:
    got = json.load(f)
  assert got["assets"] == 2 and got["views"] == 12 and np.isfinite(got["psnr"])
  out = str(tmp_path / "gs.safetensors")
  assert cli.main(["export", f"--workdir={work}", f"--out={out}"]) == 0
  back = GaussianDecoder.from_ml_atoken(out, str(tmp_path / "gs.yaml"))
  assert back.cfg.num_gaussians == 4
  assert cli.main(["eval", f"--data={spec}", "--no-lpips"]) == 1  # no decoder given
  assert "error" in capsys.readouterr().err
