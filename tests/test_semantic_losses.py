"""Semantic losses equal plain numpy re-implementations and behave as losses should."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atoken_jax.losses import semantic

N, D = 6, 16


def _np_logits(img, txt, logit_scale, bias=0.0):
  img = img / np.linalg.norm(img, axis=-1, keepdims=True)
  txt = txt / np.linalg.norm(txt, axis=-1, keepdims=True)
  return np.exp(logit_scale) * img @ txt.T + bias


def _np_log_softmax(x, axis):
  x = x - x.max(axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis, keepdims=True))


def _np_distill(student, teacher, txt, logit_scale, tau, axis):
  """Per image (axis=1) or per caption (axis=0): KL(p_teacher || p_student), then the mean."""
  s = _np_logits(student, txt, logit_scale) / tau
  t = _np_logits(teacher, txt, logit_scale) / tau
  lt, ls = _np_log_softmax(t, axis), _np_log_softmax(s, axis)
  return float((np.exp(lt) * (lt - ls)).sum(axis).mean())


def _np_sigmoid(img, txt, logit_scale, bias):
  z = _np_logits(img, txt, logit_scale, bias)
  labels = 2 * np.eye(len(img)) - 1
  return float(np.log1p(np.exp(-labels * z)).sum() / len(img))


def _batch(seed=0, n=N):
  rng = np.random.default_rng(seed)
  txt = rng.normal(size=(n, D)).astype(np.float32)
  teacher = (txt + 0.5 * rng.normal(size=(n, D))).astype(np.float32)
  student = rng.normal(size=(n, D)).astype(np.float32)
  return student, teacher, txt


@pytest.mark.parametrize("axis", ["texts", "images", "both"])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_distillation_equals_numpy(axis, tau):
  student, teacher, txt = _batch()
  got = semantic.image_distillation_loss(student, teacher, txt, logit_scale=math.log(50.0),
                                         temperature=tau, axis=axis)
  per_axis = {"texts": [1], "images": [0], "both": [1, 0]}[axis]
  want = np.mean([_np_distill(student, teacher, txt, math.log(50.0), tau, a) for a in per_axis])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sigmoid_loss_equals_numpy():
  student, _, txt = _batch(1)
  got = semantic.sigmoid_loss(student, txt, math.log(10.0), -10.0)
  np.testing.assert_allclose(got, _np_sigmoid(student, txt, math.log(10.0), -10.0), rtol=1e-5)


def test_distillation_is_zero_for_the_teacher_itself_and_positive_otherwise():
  student, teacher, txt = _batch(2)
  scale = semantic.SIGLIP2_RELEASE_LOGIT_SCALE
  assert abs(float(semantic.image_distillation_loss(teacher, teacher, txt,
                                                    logit_scale=scale))) < 1e-6
  assert float(semantic.image_distillation_loss(student, teacher, txt, logit_scale=scale)) > 0.1


def test_perfect_alignment_beats_shuffled():
  _, _, txt = _batch(3)
  img = txt + 0.05 * np.random.default_rng(0).normal(size=txt.shape).astype(np.float32)
  shuffled = np.roll(img, 1, axis=0)
  scale, bias = math.log(10.0), -10.0
  assert semantic.sigmoid_loss(img, txt, scale, bias) < semantic.sigmoid_loss(shuffled, txt,
                                                                            scale, bias)
  # distillation: a student that agrees with an aligned teacher beats a shuffled student
  aligned = semantic.image_distillation_loss(img * 2.0, img, txt, logit_scale=math.log(20.0))
  wrong = semantic.image_distillation_loss(shuffled, img, txt, logit_scale=math.log(20.0))
  assert aligned < 1e-5 < wrong


def test_empty_slots_change_nothing_even_with_nan_embeddings():
  student, teacher, txt = _batch(4, n=4)
  rng = np.random.default_rng(1)
  pad = lambda a: np.concatenate([a, rng.normal(size=(3, D)).astype(np.float32)])
  s2, t2, x2 = pad(student), pad(teacher), pad(txt)
  s2[-1] = np.nan
  x2[-2] = np.inf
  valid = np.array([True] * 4 + [False] * 3)
  for axis in ("texts", "images", "both"):
    ref = semantic.image_distillation_loss(student, teacher, txt, logit_scale=3.0, axis=axis)
    got = semantic.image_distillation_loss(s2, t2, x2, logit_scale=3.0, valid=valid, axis=axis)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(semantic.sigmoid_loss(s2, x2, 2.0, -5.0, valid=valid),
                             semantic.sigmoid_loss(student, txt, 2.0, -5.0), rtol=1e-6)
  # the valid slots need not come first
  perm = np.random.default_rng(2).permutation(7)
  np.testing.assert_allclose(semantic.sigmoid_loss(s2[perm], x2[perm], 2.0, -5.0,
                                                   valid=valid[perm]),
                             semantic.sigmoid_loss(student, txt, 2.0, -5.0), rtol=1e-6)


def test_all_empty_batch_gives_zero():
  student, teacher, txt = _batch(5)
  none = np.zeros(N, bool)
  assert float(semantic.sigmoid_loss(student, txt, 1.0, 0.0, valid=none)) == 0.0
  assert float(semantic.image_distillation_loss(student, teacher, txt, logit_scale=1.0,
                                                valid=none)) == 0.0


def test_temperature_softens_the_distributions():
  student, teacher, txt = _batch(6)
  losses = [float(semantic.image_distillation_loss(student, teacher, txt, logit_scale=4.0,
                                                   temperature=tau)) for tau in (1, 2, 4, 1e4)]
  assert losses[0] > losses[1] > losses[2] > losses[3] >= 0 and losses[3] < 1e-4  # ~ 1/tau^2
  scaled = semantic.image_distillation_loss(student, teacher, txt, logit_scale=4.0,
                                            temperature=2.0, tau_squared=True)
  np.testing.assert_allclose(scaled, 4 * losses[1], rtol=1e-6)


def test_gradients_are_finite_and_only_reach_the_student_and_valid_slots():
  student, teacher, txt = _batch(7)
  student[0] = 0.0  # a zero embedding must not give NaN gradients
  student[-1] = np.nan
  valid = np.array([True] * (N - 1) + [False])
  scale_bias = semantic.LogitScaleBias()
  params = scale_bias.init(jax.random.key(0))

  def total(s, t, p):
    ls, lb = scale_bias.apply(p)
    return (semantic.image_distillation_loss(s, t, txt, logit_scale=4.8, valid=valid)
            + semantic.sigmoid_loss(s, txt, ls, lb, valid=valid))

  gs, gt, gp = jax.jit(jax.grad(total, argnums=(0, 1, 2)))(student, teacher, params)
  for g in jax.tree.leaves((gs, gp)):
    assert np.isfinite(np.asarray(g)).all()
  assert np.abs(np.asarray(gs[1:-1])).sum() > 0
  assert not np.asarray(gs[-1]).any()  # the empty slot gets no gradient
  assert not np.asarray(gt).any()  # the teacher is frozen
  assert np.asarray(gp["params"]["logit_scale"]) != 0


def test_logit_scale_bias_init_and_bad_axis():
  p = semantic.LogitScaleBias().init(jax.random.key(0))["params"]
  np.testing.assert_allclose(p["logit_scale"].unbox(), math.log(10.0), rtol=1e-6)
  np.testing.assert_allclose(p["logit_bias"].unbox(), -10.0)
  p = semantic.LogitScaleBias(scale_init=2.0, bias_init=-3.0).init(jax.random.key(0))["params"]
  assert (float(p["logit_scale"].unbox()), float(p["logit_bias"].unbox())) == (2.0, -3.0)
  with pytest.raises(ValueError, match="axis"):
    semantic.distillation_kl(jnp.zeros((2, 2)), jnp.zeros((2, 2)), axis="rows")
