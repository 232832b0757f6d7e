"""Curriculum hand-offs: latent 32 -> 48 keeps the reconstruction, FSQ switch, lineage."""
import json

import jax
import ml_collections
import numpy as np

import atoken_jax as aj
from atoken_jax.train import loop as loop_lib
from atoken_jax.train import tokenizer_task
from atoken_jax.train.tokenizer_state import model_config_from
from experiments import common
from tests import synthetic_data


def _cfg(steps, latent, quantizer="", previous=""):
  c = common.base("tiny")
  c.total_steps, c.log_every, c.async_checkpoints = steps, 1, False
  c.model.latent_dim, c.model.quantizer = latent, quantizer
  c.init.previous_stage = previous
  c.tasks = ml_collections.ConfigDict({"image_recon": {"accum_steps": 1}})
  c.loss.update(lpips=0.0, gram=0.0, clip=0.0, sem=0.0)
  return c


def _trainer(cfg, workdir):
  return loop_lib.Loop(tokenizer_task.TokenizerTask(cfg, synthetic_data.factory()), str(workdir),
                             devices=jax.devices()[:1])


def test_latent_expansion_keeps_the_reconstruction_and_trains(tmp_path):
  s1 = _trainer(_cfg(2, 32), tmp_path / "s1").run()
  t2 = _trainer(_cfg(4, 48, previous=str(tmp_path / "s1")), tmp_path / "s2")
  s2 = t2.initial_state()
  old = jax.device_get(s1.ema_params["model"])
  new = jax.device_get(s2.params["model"])
  pk, nk = old["proj"]["kernel"], new["proj"]["kernel"]
  np.testing.assert_array_equal(nk[:, :32], pk[:, :32])        # means kept
  np.testing.assert_array_equal(nk[:, 48:80], pk[:, 32:])      # log-variances kept
  assert np.abs(nk[:, 32:48]).max() > 0                        # fresh new channels
  dk = new["decoder"]["input_layer"]["kernel"]
  np.testing.assert_array_equal(dk[:32], old["decoder"]["input_layer"]["kernel"])
  assert not dk[32:].any()
  # same images -> same posterior means on the old channels, same reconstruction
  img = np.tanh(np.random.default_rng(0).normal(size=(32, 48, 3))).astype(np.float32)
  tok1 = aj.Tokenizer(model_config_from(_cfg(2, 32)), old)
  tok2 = aj.Tokenizer(model_config_from(_cfg(4, 48)), new)
  e1, e2 = tok1.encode([img]), tok2.encode([img])
  np.testing.assert_allclose(e2[0].mean[:, :32], e1[0].mean, atol=1e-6)
  np.testing.assert_allclose(tok2.decode(e2)[0], tok1.decode(e1)[0], atol=1e-5)
  lineage = json.load(open(tmp_path / "s2" / "lineage.json"))
  assert lineage[-1]["from_step"] == 2 and lineage[-1]["latent"] == [32, 48]
  state = t2.run()  # the handed-off state trains, with a fresh optimiser
  assert int(state.step) == 4 and int(state.skipped) == 0


def test_fsq_switch_copies_every_parameter(tmp_path):
  s3 = _trainer(_cfg(1, 48), tmp_path / "s3").run()
  t4 = _trainer(_cfg(2, 48, quantizer="fsq", previous=str(tmp_path / "s3")), tmp_path / "s4")
  s4 = t4.initial_state()
  for a, b in zip(jax.tree.leaves(jax.device_get(s3.ema_params)),
                  jax.tree.leaves(jax.device_get(s4.params)), strict=True):
    np.testing.assert_array_equal(a, b)
  assert int(s4.step) == 0
  assert int(t4.run().skipped) == 0


def test_hand_off_between_layer_layouts_restacks_the_blocks(tmp_path):
  """A per-layer previous stage hands off to a scanned (stacked-layer) run, every block kept."""
  from atoken_jax.interop import layer_stacking
  s1 = _trainer(_cfg(1, 48), tmp_path / "s1").run()
  cfg = _cfg(2, 48, previous=str(tmp_path / "s1"))
  cfg.model.scan_layers = True
  s2 = _trainer(cfg, tmp_path / "s2").initial_state()
  assert layer_stacking.is_stacked(jax.device_get(s2.params["model"]))
  new = layer_stacking.unstack_layers(jax.device_get(s2.params["model"]))
  for a, b in zip(jax.tree.leaves(jax.device_get(s1.ema_params["model"])), jax.tree.leaves(new),
                  strict=True):
    np.testing.assert_array_equal(a, b)
