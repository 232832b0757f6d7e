"""Semantic losses (paper §3.3): image distillation and the SigLIP sigmoid loss.

Both compare the AToken semantic head's pooled embedding of each sample with the frozen SigLIP2
text tower's embedding of its caption. Batches carry empty slots, so every loss takes
`valid` [N] (True = a real image/caption pair); an empty slot changes neither the loss nor any
gradient, even when its embeddings hold NaN. Everything is computed in float32.

Logits: s_ij = exp(logit_scale) * <img_i / |img_i|, txt_j / |txt_j|> + logit_bias, with
`logit_scale` in log space as SigLIP stores it (Hugging Face `logit_scale`, big_vision `t`).
"""
from __future__ import annotations

import math
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

# What apple/ml-atoken hard-codes for SigLIP2 (its comment: missing from the uploaded
# checkpoints): exp(4.8438) ~ 127.
SIGLIP2_RELEASE_LOGIT_SCALE = 4.8438
SIGLIP2_RELEASE_LOGIT_BIAS = -15.5625
_NEG = -1e9  # a masked logit: exp() underflows to 0 yet stays finite, so no NaN gradients

Axis = Literal["texts", "images", "both"]


def _valid(valid: jax.Array | None, n: int) -> jax.Array:
  return jnp.ones((n,), bool) if valid is None else jnp.asarray(valid, bool)


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """[..., D] -> unit vectors in float32; a zero vector stays zero with a finite gradient."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.square(x).sum(-1, keepdims=True), eps * eps))


def similarity_logits(image: jax.Array, text: jax.Array, logit_scale, logit_bias=0.0,
                      valid: jax.Array | None = None) -> jax.Array:
  """image [N, D], text [M, D] -> s [N, M] = exp(logit_scale) * cos(image_i, text_j) + bias.

  With `valid` [N] (needs M == N), empty slots' embeddings are zeroed first (NaN-proof)."""
  if valid is not None:
    valid = jnp.asarray(valid, bool)[:, None]
    image, text = jnp.where(valid, image, 0), jnp.where(valid, text, 0)
  cos = jnp.einsum("nd,md->nm", l2_normalize(image), l2_normalize(text),
                   precision=jax.lax.Precision.HIGHEST)
  return jnp.exp(jnp.asarray(logit_scale, jnp.float32)) * cos + jnp.asarray(logit_bias,
                                                                            jnp.float32)


def distillation_kl(student_logits: jax.Array, teacher_logits: jax.Array, *,
                    temperature: float = 2.0, valid: jax.Array | None = None,
                    axis: Axis = "texts", tau_squared: bool = False) -> jax.Array:
  """KL(softmax(s_teacher / tau) || softmax(s_student / tau)), mean over valid rows (§3.3).

  Args:
    student_logits / teacher_logits: [N, N] image-text logits (row i = image i, column j =
      caption j); the teacher gets no gradient.
    temperature: tau (paper: 2).
    valid: [N] bool; an invalid slot is neither a row nor a column of any softmax.
    axis: the paper does not say which softmax. "texts" (default): for each image, a
      distribution over the batch's captions, i.e. zero-shot classification's direction;
      "images": for each caption, over images; "both": the mean of the two.
    tau_squared: multiply by tau^2 (Hinton et al.'s gradient-scale correction; not in the
      paper).
  Returns: scalar float32 (0 when no slot is valid).
  """
  n = student_logits.shape[0]
  v = _valid(valid, n)
  pair = v[:, None] & v[None, :]
  s = jnp.where(pair, student_logits.astype(jnp.float32) / temperature, _NEG)
  t = jnp.where(pair, jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature,
                _NEG)

  def kl_over(ax: int) -> jax.Array:
    log_pt, log_ps = jax.nn.log_softmax(t, ax), jax.nn.log_softmax(s, ax)
    per = jnp.where(pair, jnp.exp(log_pt) * (log_pt - log_ps), 0.0).sum(ax)  # [N]
    return jnp.where(v, per, 0.0).sum() / jnp.maximum(v.sum(), 1)

  axes = {"texts": (1,), "images": (0,), "both": (1, 0)}
  if axis not in axes:
    raise ValueError(f"axis must be 'texts', 'images' or 'both', got {axis!r}")
  loss = sum(kl_over(a) for a in axes[axis]) / len(axes[axis])
  return loss * temperature ** 2 if tau_squared else loss


def image_distillation_loss(student_image: jax.Array, teacher_image: jax.Array,
                            text: jax.Array, *, logit_scale, temperature: float = 2.0,
                            valid: jax.Array | None = None, axis: Axis = "texts",
                            tau_squared: bool = False) -> jax.Array:
  """Image understanding loss (§3.3): student (AToken head) and teacher (frozen SigLIP2 vision
  tower) image embeddings [N, D], each scored against the same frozen text embeddings [N, D] of
  the batch's captions with the same `logit_scale`; see `distillation_kl`. The logit bias
  cancels in a softmax, so there is none."""
  s = similarity_logits(student_image, text, logit_scale, valid=valid)
  t = similarity_logits(teacher_image, text, logit_scale, valid=valid)
  return distillation_kl(s, t, temperature=temperature, valid=valid, axis=axis,
                         tau_squared=tau_squared)


def sigmoid_loss(image: jax.Array, text: jax.Array, logit_scale, logit_bias, *,
                 valid: jax.Array | None = None) -> jax.Array:
  """SigLIP's pairwise sigmoid loss (video and 3D understanding, §3.3).

  image [N, D], text [N, D] (pair i = image i with caption i); labels +1 on the diagonal and
  -1 elsewhere; -sum over valid pairs of log sigmoid(label * logit), divided by the number of
  valid images (SigLIP: sum over texts, mean over images). Scalar float32, 0 when none valid.
  """
  n = image.shape[0]
  v = _valid(valid, n)
  logits = similarity_logits(image, text, logit_scale, logit_bias, valid=v)
  labels = 2.0 * jnp.eye(n, dtype=jnp.float32) - 1.0
  nll = -jax.nn.log_sigmoid(labels * logits)
  nll = jnp.where(v[:, None] & v[None, :], nll, 0.0)
  return nll.sum() / jnp.maximum(v.sum(), 1)


class LogitScaleBias(nn.Module):
  """The sigmoid loss's learnable scalars: params `logit_scale` (log space, init log 10 as in
  SigLIP) and `logit_bias` (init -10). Returns (logit_scale, logit_bias), float32."""
  scale_init: float = math.log(10.0)
  bias_init: float = -10.0

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    init = lambda v: nn.with_logical_partitioning(nn.initializers.constant(v), ())
    scale = self.param("logit_scale", init(self.scale_init), (), jnp.float32)
    bias = self.param("logit_bias", init(self.bias_init), (), jnp.float32)
    return scale, bias
