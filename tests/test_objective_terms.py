"""Each term of the training objective on small arrays with a hand-computed answer, the
(modality, task) table, and the total as Σ weight·term."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from atoken_jax import config as config_lib
from atoken_jax import packing
from atoken_jax import perceptual
from atoken_jax.losses import semantic
from atoken_jax.model import atoken as atoken_model
from atoken_jax.train import frozen as frozen_lib
from atoken_jax.train import objective
from atoken_jax.train import perceptual_inputs
from atoken_jax.train import tokenizer_state
from experiments import common
from tests import synthetic_data

F0 = config_lib.FRAME_PATCH_DIM  # 768 values in frame 0 of a 3072-value patch


def test_l1_averages_each_patch_over_its_real_values_then_over_masked_tokens():
  target = np.zeros((1, 4, config_lib.PATCH_DIM), np.float32)
  recon = np.zeros_like(target)
  recon[0, 0, :F0 // 2] = 1.0   # image: half of frame 0 off by 1 -> 0.5
  recon[0, 0, F0:] = 7.0        # frames 1-3 of an image are time padding: ignored
  recon[0, 1] = 2.0             # video: all 4 frames count -> 2
  recon[0, 2, :F0] = -3.0       # voxels: frame 0 only (zero-padded features) -> 3
  recon[0, 2, F0:] = 9.0
  recon[0, 3] = 100.0           # masked out
  modality = np.array([[objective.IMAGE, objective.VIDEO, objective.VOXELS, objective.IMAGE]])
  mask = np.array([[True, True, True, False]])
  got = objective.l1_loss(recon, target, mask, modality)
  assert float(got) == pytest.approx((0.5 + 2.0 + 3.0) / 3, rel=1e-6)
  assert float(objective.l1_loss(recon, target, np.zeros_like(mask), modality)) == 0.0


def test_kl_of_a_known_gaussian():
  # per channel 0.5 (m^2 + e^lv - 1 - lv): (m=1, lv=0) -> 0.5; (m=0, lv=log 2) -> (1 - log 2) / 2
  mean = np.array([[[1.0, 0.0], [5.0, 5.0]]], np.float32)
  logvar = np.array([[[0.0, math.log(2.0)], [3.0, 3.0]]], np.float32)
  mask = np.array([[True, False]])
  assert float(objective.kl_loss(mean, logvar, mask)) == pytest.approx(1.0 - 0.5 * math.log(2.0),
                                                                       rel=1e-6)
  # the standard normal itself costs nothing
  assert float(objective.kl_loss(np.zeros((1, 1, 4)), np.zeros((1, 1, 4)),
                                 np.ones((1, 1), bool))) == 0.0


def test_clip_perceptual_is_one_minus_cosine_averaged_over_tokens_then_valid_images():
  recon = np.array([[[1, 0], [1, 0]], [[1, 1], [1, 1]], [[0, 3], [0, 3]]], np.float32)
  target = np.array([[[0, 1], [2, 0]], [[-1, -1], [-1, -1]], [[9, 9], [9, 9]]], np.float32)
  # image 0: tokens orthogonal (1) and parallel at another scale (0) -> 0.5; image 1: opposite
  # (2, 2) -> 2; image 2 is not valid
  valid = np.array([True, True, False])
  got = objective.clip_perceptual_loss(recon, target, valid)
  assert float(got) == pytest.approx((0.5 + 2.0) / 2, rel=1e-6)
  assert float(objective.clip_perceptual_loss(recon, target, np.array([1, 0, 0], bool))) == \
      pytest.approx(0.5, rel=1e-6)


def test_distillation_kl_of_two_known_similarity_matrices_at_tau_2():
  # teacher logits / tau = log(3) on the diagonal -> softmax rows (3/4, 1/4); the student is
  # uniform (1/2, 1/2): KL = 3/4 log(3/2) + 1/4 log(1/2) for each image
  want = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
  teacher_logits = 2.0 * math.log(3.0) * np.eye(2, dtype=np.float32)
  student_logits = np.zeros((2, 2), np.float32)
  got = semantic.distillation_kl(student_logits, teacher_logits, temperature=2.0)
  assert float(got) == pytest.approx(want, rel=1e-6)
  # the same through embeddings: texts e1, e2; teacher images = the texts (cos = I); the
  # student points away from both (cos = 0); a third, empty slot changes nothing
  e = np.eye(3, dtype=np.float32)
  text = np.stack([e[0], e[1], e[2]])
  teacher = np.stack([e[0], e[1], e[2]])
  student = np.stack([e[2], e[2], e[0]])
  got = objective.distillation_loss(student, teacher, text,
                                    logit_scale=math.log(2.0 * math.log(3.0)), temperature=2.0,
                                    valid=np.array([True, True, False]))
  assert float(got) == pytest.approx(want, rel=1e-5)


def test_sigmoid_loss_on_a_2x2_case():
  # image = text = (e1, e2), exp(scale) = 2, bias -1: diagonal logits 1 (label +1), off-diagonal
  # -1 (label -1); every pair costs -log sigmoid(1) = log(1 + e^-1); 4 pairs / 2 images
  e = np.eye(2, dtype=np.float32)
  got = objective.sigmoid_loss(e, e, math.log(2.0), -1.0)
  assert float(got) == pytest.approx(2.0 * math.log1p(math.exp(-1.0)), rel=1e-6)
  # an empty slot (NaN embedding) is neither an image nor a caption
  image = np.concatenate([e, np.full((1, 2), np.nan, np.float32)])
  text = np.concatenate([e, np.zeros((1, 2), np.float32)])
  got = objective.sigmoid_loss(image, text, math.log(2.0), -1.0,
                               valid=np.array([True, True, False]))
  assert float(got) == pytest.approx(2.0 * math.log1p(math.exp(-1.0)), rel=1e-6)


@pytest.fixture(scope="module")
def alex():
  return perceptual.LPIPS("alex"), perceptual.random_lpips_params("alex", seed=0)


def _images(seed, n=3, size=32):
  return jnp.asarray(np.tanh(np.random.default_rng(seed).normal(size=(n, size, size, 3))),
                     jnp.float32)


def test_lpips_and_gram_are_zero_for_identical_images_and_average_valid_images_only(alex):
  model, params = alex
  x, y = _images(0), _images(1)
  valid = np.array([True, False, True])
  assert float(objective.lpips_loss(model, params, x, x, valid)) == pytest.approx(0.0, abs=1e-6)
  assert float(objective.gram_loss(params, x, x, valid, "alex")) == pytest.approx(0.0, abs=1e-9)
  per_lpips = np.asarray(model.apply({"params": params}, x, y))
  per_gram = np.asarray(perceptual.gram_loss(params, x, y, net="alex"))
  assert per_lpips[1] > 0 and per_gram[1] > 0
  assert float(objective.lpips_loss(model, params, x, y, valid)) == pytest.approx(
      (per_lpips[0] + per_lpips[2]) / 2, rel=1e-5)
  assert float(objective.gram_loss(params, x, y, valid, "alex")) == pytest.approx(
      (per_gram[0] + per_gram[2]) / 2, rel=1e-5)


def test_the_table_names_the_papers_terms_for_every_modality_and_task():
  kinds = [objective.TaskKind(m, t) for m in ("image", "video", "voxels")
           for t in ("reconstruction", "understanding")]
  assert {(k.modality, k.task) for k in kinds} == set(objective.TERMS)
  assert objective.TaskKind("image", "reconstruction").terms == ("l1", "kl", "lpips", "gram",
                                                                "clip")
  assert objective.TaskKind("video", "reconstruction").terms == ("l1", "kl")
  assert objective.TaskKind("voxels", "understanding").terms == ("sigmoid",)
  assert objective.TaskKind("image", "understanding").terms == ("distill",)
  with pytest.raises(ValueError, match="image, video or voxels"):
    objective.TaskKind("3d", "reconstruction")
  with pytest.raises(ValueError, match="reconstruction or understanding"):
    objective.TaskKind("image", "recon")
  # hashable and equal by value: the step's compile cache keys on it
  assert hash(objective.TaskKind("image", "reconstruction")) == hash(kinds[0])


def test_active_terms_follow_weights_networks_and_the_latent():
  cfg = common.base("tiny").loss
  cfg.update(lpips=1.0, gram=1.0, clip=1.0, sem=1.0)  # every term on (the tiny job trains L1+KL)
  model_cfg = config_lib.model_config("tiny")
  full = frozen_lib.FrozenSpec("alex", model_cfg, None)
  image_rec = objective.TaskKind("image", "reconstruction")
  assert objective.active_terms(image_rec, model_cfg, cfg, full) == image_rec.terms
  cfg.gram = 0.0
  assert objective.active_terms(image_rec, model_cfg, cfg, full) == ("l1", "kl", "lpips", "clip")
  no_nets = frozen_lib.FrozenSpec(None, None, None)
  assert objective.active_terms(image_rec, model_cfg, cfg, no_nets) == ("l1", "kl")
  fsq = config_lib.model_config("tiny", latent_dim=48, quantizer="fsq")
  assert objective.active_terms(image_rec, fsq, cfg, no_nets) == ("l1",)
  assert objective.active_terms(objective.TaskKind("image", "understanding"), model_cfg, cfg,
                                no_nets) == ()
  cfg.sem = 0.0
  assert objective.active_terms(objective.TaskKind("video", "understanding"), model_cfg, cfg,
                                full) == ()


def test_total_is_the_sum_of_weight_times_term():
  cfg = common.base("tiny").loss
  cfg.update(rec=0.2, sem=0.7, kl=1e-3, l1=1.5, lpips=10.0, gram=1e3, clip=2.0)
  values = {"l1": 0.3, "kl": 4.0, "lpips": 0.25, "gram": 1e-3, "clip": 0.5}
  loss, groups = objective.total(values, objective.TaskKind("image", "reconstruction"), cfg)
  # by hand: 1e-3*4 + 0.2*(1.5*0.3 + 10*0.25 + 1e3*1e-3 + 2*0.5)
  assert float(loss) == pytest.approx(0.004 + 0.2 * (0.45 + 2.5 + 1.0 + 1.0), rel=1e-6)
  assert float(loss) == pytest.approx(sum(objective.weight(n, cfg) * v
                                          for n, v in values.items()), rel=1e-6)
  assert float(groups["rec"]) == pytest.approx(4.95, rel=1e-6) and "sem" not in groups
  loss, groups = objective.total({"sigmoid": 3.0}, objective.TaskKind("video", "understanding"),
                                 cfg)
  assert float(loss) == pytest.approx(0.7 * 3.0) and float(groups["sem"]) == 3.0


def _tiny_objective(**loss):
  """(cfg, model cfg, frozen spec, frozen nets (random weights), fresh params) of the tiny
  preset with these loss weights."""
  cfg = common.base("tiny")
  cfg.loss.update(**loss)
  model_cfg = tokenizer_state.model_config_from(cfg)
  spec, frozen = frozen_lib.load(cfg, model_cfg, seed=0)
  model = atoken_model.AToken(model_cfg)
  params = {"model": nn.meta.unbox(model.init({"params": jax.random.PRNGKey(0)},
                                              packing.empty_batch(1, 16, 1),
                                              "mean")["params"]),
            "siglip": {"logit_scale": jnp.float32(math.log(10.0)),
                       "logit_bias": jnp.float32(-10.0)}}
  return cfg, model_cfg, spec, frozen, params


def _synthetic_batch(cfg, kind, rows: int, **data_kw):
  """Synthetic images packed as the pipeline would for `kind` (with the perceptual resize
  weights its loss needs)."""
  canvas = perceptual_inputs.data_canvas(cfg.loss, ml_collections.ConfigDict(dict(
      perceptual=dict(size=0, max_side=0))), kind.modality).perceptual
  return next(synthetic_data.SyntheticImages(rows=rows, perceptual=(canvas.size,
                                                                    canvas.max_side),
                                             **data_kw))


def test_the_loss_of_every_kind_is_sum_of_weight_times_its_reported_terms():
  """The real loss function (tiny model, random frozen LPIPS / teacher / text tower) on
  synthetic batches: every active term is reported and the loss is Σ weight·term."""
  cfg, model_cfg, spec, frozen, params = _tiny_objective(
      rec=0.3, sem=0.8, kl=1e-2, l1=1.0, lpips=2.0, gram=5.0, clip=0.5)
  loss_fn = jax.jit(objective.make_loss_fn(model_cfg, cfg.loss, spec), static_argnums=4)
  cases = [(objective.TaskKind("image", "reconstruction"), dict(seed=1)),
           (objective.TaskKind("image", "understanding"), dict(seed=2, understanding=True)),
           (objective.TaskKind("video", "understanding"), dict(seed=3, understanding=True,
                                                               modality=1))]
  for kind, data_kw in cases:
    batch = _synthetic_batch(cfg, kind, rows=4, **data_kw)
    assert (batch.image_rows is not None) == (kind.modality == "image")
    loss, metrics = loss_fn(params, frozen, batch, jax.random.PRNGKey(1), kind)
    terms = objective.active_terms(kind, model_cfg, cfg.loss, spec)
    assert terms == kind.terms, kind
    for name in terms:
      assert np.isfinite(float(metrics[name])), (kind, name)
    want = sum(objective.weight(name, cfg.loss) * float(metrics[name]) for name in terms)
    assert float(loss) == pytest.approx(want, rel=1e-5), kind
    assert float(metrics["loss"]) == float(loss)
    assert float(metrics[terms[-1]]) > 0, (kind, terms[-1])


def test_a_frame0_batch_trains_exactly_as_its_four_frame_twin():
  """Images carry only frame 0 (768 wide; `atoken.patch_width`): the loss, every term and the
  gradient of every parameter equal those of the same batch with frames 1-3 as zero padding
  (3072 wide), so leaving the padding out changes nothing but the work."""
  cfg, model_cfg, spec, frozen, params = _tiny_objective(
      rec=0.3, kl=1e-2, l1=1.0, lpips=2.0, gram=5.0, clip=0.5)
  kind = objective.TaskKind("image", "reconstruction")
  narrow = _synthetic_batch(cfg, kind, rows=2, seed=4)
  assert narrow.patches.shape[-1] == F0
  wide = narrow.replace(patches=np.pad(narrow.patches, ((0, 0), (0, 0), (0, 3 * F0))))
  loss_fn = objective.make_loss_fn(model_cfg, cfg.loss, spec)
  grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), static_argnums=4)
  (loss_n, metrics_n), grads_n = grad_fn(params, frozen, narrow, jax.random.PRNGKey(1), kind)
  (loss_w, metrics_w), grads_w = grad_fn(params, frozen, wide, jax.random.PRNGKey(1), kind)
  assert set(kind.terms) <= set(metrics_n)
  for name in metrics_w:
    np.testing.assert_allclose(metrics_n[name], metrics_w[name], rtol=2e-5, atol=1e-7,
                               err_msg=name)
  flat_n = dict(jax.tree_util.tree_leaves_with_path(grads_n))
  for path, g_w in jax.tree_util.tree_leaves_with_path(grads_w):
    np.testing.assert_allclose(flat_n[path], g_w, rtol=2e-4, atol=1e-7,
                               err_msg=jax.tree_util.keystr(path))
  decoder_out = grads_w["model"]["decoder"]["out_layer"]["kernel"]
  assert float(jnp.abs(decoder_out[:, :F0]).max()) > 0  # the test sees real gradients
