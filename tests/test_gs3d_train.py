"""Training the Gaussian decoder: gradients reach it (and the tokenizer's decoder in joint mode)
through the trainer's jitted step; the objective falls when fitting a procedural asset; runs
resume from their checkpoints."""
import jax
import numpy as np
import pytest

from atoken_jax.config import gaussian_decoder_config
from atoken_jax.gs3d import config as gs_config
from atoken_jax.gs3d import data as data_lib
from atoken_jax.gs3d import objective, procedural, task as gs_task
from atoken_jax.train import loop as loop_lib
from atoken_jax.gs3d import views as views_lib
from atoken_jax.model import gaussian_decoder as net_lib


class FixedBatches:
  """Always the same batch (one asset, its first K views); checkpointable like AssetBatches."""

  def __init__(self, batch):
    self.batch, self.served = batch, 0

  def __next__(self):
    self.served += 1
    return self.batch

  def get_state(self):
    return {"served": self.served}

  def set_state(self, state):
    self.served = state["served"]


@pytest.fixture(scope="module")
def cone():
  return procedural.procedural_asset("cone", num_views=4, size=64)


def _cfg(mode, **loss):
  cfg = gs_config.default_config("tiny", mode)
  cfg.gs.attention, cfg.data.row_len, cfg.data.views_per_asset = "masked", 1024, 2
  cfg.loss.update(lpips_net="alex", **loss)
  cfg.log_every, cfg.ckpt_every, cfg.async_checkpoints = 1, 1000, False
  cfg.tokenizer.latent_dim = 16
  return cfg


def _trainer(cfg, asset, workdir):
  def make(cfg, features, packed, gs_cfg):
    ex = data_lib.example(asset, views_per_asset=cfg.data.views_per_asset, image_size=64,
                          row_len=cfg.data.row_len, features=features, gs_cfg=gs_cfg,
                          packed=packed)
    return FixedBatches(data_lib.collate([ex]))
  return loop_lib.Loop(gs_task.GSTask(cfg, make_iterator=make), str(workdir),
                       devices=jax.devices()[:1])


def _grads(tr, perturb_out_layer=True):
  """Gradients of one micro-batch, from a state whose out_layer is small and random (the
  release's zero init would give the earlier layers zero gradient at step 0)."""
  state = tr.initial_state()
  params = jax.device_get(state.params)
  if perturb_out_layer:
    out = params["gs"]["out_layer"]
    out["kernel"] = np.random.default_rng(0).normal(0, 0.02, out["kernel"].shape).astype(
        np.float32)
  batch = loop_lib.global_batch(next(tr.iterators["data"]), tr.mesh)
  grads, m = tr.fns.micro(None, None, params, tr.frozen, batch,
                          jax.random.PRNGKey(0), None)
  return jax.device_get(grads), jax.device_get(m)


def _nonzero_leaves(tree):
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  assert all(np.isfinite(v).all() for _, v in leaves)
  return {jax.tree_util.keystr(p): float(np.abs(v).max()) > 0 for p, v in leaves}


@pytest.mark.slow  # the fast joint test below also checks every Gaussian-decoder gradient
def test_gradients_reach_every_gaussian_decoder_parameter(cone, tmp_path):
  tr = _trainer(_cfg("alone"), cone, tmp_path)
  grads, m = _grads(tr)
  assert set(grads) == {"gs"}
  nonzero = _nonzero_leaves(grads)
  assert all(nonzero.values()), [k for k, v in nonzero.items() if not v]
  assert m["views"] == 2 and m["overflow"] == 0 and 0 < m["l1"] < 1
  np.testing.assert_allclose(m["loss"], m["l1"] + 0.2 * m["lpips"] + 0.2 * (1 - m["ms_ssim"]),
                             rtol=1e-5)


def test_joint_gradients_reach_the_tokenizer_decoder_and_the_gaussian_decoder(cone, tmp_path):
  """Only the rendered-view objective (rec_l1 = kl = 0; its L1 term suffices here, LPIPS and
  MS-SSIM gradients are tested in test_gs3d_objective): the gradient flows through the renders,
  the Gaussian decoder and the voxel features into the tokenizer's decoder."""
  tr = _trainer(_cfg("joint", rec_l1=0.0, kl=0.0, lpips=0.0, ssim=0.0), cone, tmp_path)
  assert set(tr.frozen["model"]) == {"encoder", "head", "proj"}  # frozen, no gradient
  grads, m = _grads(tr)
  assert set(grads) == {"gs", "model"} and set(grads["model"]) == {"decoder"}
  nonzero = _nonzero_leaves(grads)
  gs = {k: v for k, v in nonzero.items() if "'gs'" in k}
  assert len(gs) > 5 and all(gs.values()), [k for k, v in gs.items() if not v]
  dec = {k: v for k, v in nonzero.items() if "'decoder'" in k}
  assert len(dec) > 5 and all(dec.values()), [k for k, v in dec.items() if not v]
  assert float(m["loss"]) == pytest.approx(float(m["gs_loss"]))


@pytest.mark.slow
def test_joint_loss_adds_the_tokenizer_terms(cone, tmp_path):
  tr = _trainer(_cfg("joint"), cone, tmp_path)
  state = tr.initial_state()
  loss_fn = gs_task.make_loss_fn(tr.cfg, tr.task.gs_cfg, tr.task.model_cfg)
  batch = loop_lib.global_batch(next(tr.iterators["data"]), tr.mesh)
  _, m = jax.jit(loss_fn)(state.params, tr.frozen, batch, jax.random.PRNGKey(0))
  assert m["rec_l1"] > 0 and np.isfinite(m["kl"])
  np.testing.assert_allclose(m["loss"], m["gs_loss"] + m["rec_l1"] + 1e-8 * m["kl"], rtol=1e-5)


@pytest.mark.slow
def test_training_reduces_the_objective_and_resumes(cone, tmp_path):
  """12 steps of the tiny decoder on 2 fixed 64² views of the cone (measured: 0.21 -> 0.10)."""
  cfg = _cfg("alone")
  cfg.total_steps, cfg.ckpt_every = 12, 6
  cfg.optim.update(lr=3e-3, warmup_steps=1)
  tr = _trainer(cfg, cone, tmp_path)
  state = tr.run()
  losses = [h["gs/loss"] for h in tr.history]
  assert len(losses) == 12 and losses[-1] < 0.6 * losses[0], losses
  assert int(state.step) == 12 and tr.checkpointer.steps() == [6, 12]
  cfg.total_steps = 14
  again = _trainer(cfg, cone, tmp_path)
  again.run()
  assert [h["step"] for h in again.history] == [13, 14]
  assert again.iterators["data"].served == 12 + 2 and again.history[-1]["gs/loss"] < losses[0]


def test_packed_and_masked_attention_decode_the_same_gaussians():
  """Two assets of different sizes in one batch: per-asset packed windows (vmapped, shardable
  over the batch) equal the masked path."""
  cfg = gaussian_decoder_config("tiny", num_gaussians=2)
  variables = net_lib.init_variables(cfg, jax.random.PRNGKey(0))
  variables["params"]["out_layer"]["kernel"] = np.random.default_rng(0).normal(
      0, 0.1, variables["params"]["out_layer"]["kernel"].shape).astype(np.float32)
  rows = []
  for n, seed in ((300, 0), (180, 1)):
    rng = np.random.default_rng(seed)
    coords = np.stack(np.unravel_index(rng.choice(20 ** 3, n, replace=False), (20,) * 3), -1)
    rows.append(views_lib.pad_voxels(rng.uniform(-1, 1, (n, 768)), coords + 10 * seed, 320))
  feats, coords, valid = (np.stack(x) for x in zip(*rows))
  layouts = [net_lib.window_layout(c[None], v[None], cfg) for c, v in zip(coords, valid)]
  flat = data_lib.collate([objective.flatten_layout(lay) for lay in layouts])
  decode = jax.jit(objective.decode_gaussians, static_argnums=0)
  masked, mv = decode(cfg, variables, feats, coords, valid)
  packed, pv = decode(cfg, variables, feats, coords, valid, objective.unflatten_layout(flat))
  np.testing.assert_array_equal(mv, pv)
  keep = np.asarray(mv)
  for a, b in zip(masked, packed):
    np.testing.assert_allclose(np.asarray(a)[keep], np.asarray(b)[keep], atol=2e-5)



@pytest.mark.parametrize("name", ["gs_decoder_alone", "gs_decoder_joint"])
@pytest.mark.parametrize("arg", ["tiny", "so400m"])
def test_experiment_configs(name, arg):
  import importlib  # pylint: disable=import-outside-toplevel
  cfg = importlib.import_module(f"experiments.{name}").get_config(arg)
  assert cfg.mode == name.split("_")[-1] and gs_task.uses_tokenizer(cfg) == (cfg.mode == "joint")
  w, r = gs_task.weights_from(cfg), gs_task.settings_from(cfg)
  assert (w.l1, w.lpips, w.ssim, w.lpips_net) == (1.0, 0.2, 0.2, "vgg")
  assert (r.filter_2d, r.mip, r.background, r.near) == (0.1, True, (0.0, 0.0, 0.0), 0.2)
  assert cfg.data.image_size >= objective.min_image_side(w.ssim_scales)
  if arg == "so400m":
    assert gs_task.gs_config_from(cfg) == gaussian_decoder_config("so400m")  # the release's
    assert w.ssim_scales == 5 and not cfg.loss.lpips_weights  # must be given for a real run
