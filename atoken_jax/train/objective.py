"""The training objective (paper §3.3, §3.5) as a table of named terms.

    L     = λ_KL·KL + λ_rec·L_rec + λ_sem·L_sem              (config.loss.kl, .rec, .sem)
    L_rec = λ_1·L1 + λ_LPIPS·LPIPS + λ_GRAM·Gram + λ_CLIP·CLIP-perceptual   (images)
    L_rec = λ_1·L1                                             (video, 3D)
    L_sem = distillation (images) | sigmoid (video, 3D)

`TERMS[(modality, task)]` names the terms a task's batches carry; a term is switched off when its
weight is 0 or its frozen network is absent (`active_terms`). `weight(name, loss_cfg)` is a
term's factor in L, so a batch's loss is Σ weight(name)·term(name) over its active terms.

Every term is masked so padding never contributes: a slot's `task` and `modality` [B, S] decide
which tokens / samples enter it. Each term is a mean over the tokens (L1, KL) or samples (the
others) it covers, so a batch's loss does not depend on how much padding it carries.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from atoken_jax import config as config_lib
from atoken_jax import perceptual
from atoken_jax import tokens
from atoken_jax.losses import semantic
from atoken_jax.model import atoken as atoken_model
from atoken_jax.model import bottleneck
from atoken_jax.text import siglip2_text
from atoken_jax.train import frozen as frozen_lib
from atoken_jax.train import perceptual_inputs

IMAGE, VIDEO, VOXELS = (tokens.MODALITY_IDS[k] for k in ("image", "video", "voxels"))
RECONSTRUCTION, UNDERSTANDING = (tokens.TASK_IDS[k] for k in ("reconstruction", "understanding"))

# Which terms a (modality, task) batch carries (paper §3.3). "voxels" is the 3D modality.
TERMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("image", "reconstruction"): ("l1", "kl", "lpips", "gram", "clip"),
    ("video", "reconstruction"): ("l1", "kl"),
    ("voxels", "reconstruction"): ("l1", "kl"),
    ("image", "understanding"): ("distill",),
    ("video", "understanding"): ("sigmoid",),
    ("voxels", "understanding"): ("sigmoid",),
}
REC_TERMS = ("l1", "lpips", "gram", "clip")  # L_rec, each with its own λ (config.loss.<name>)
SEM_TERMS = ("distill", "sigmoid")           # L_sem, no λ of their own


@dataclasses.dataclass(frozen=True)
class TaskKind:
  """A training task's modality and task; decides its loss terms. Static and hashable: the
  step compiles once per kind (and batch shape)."""
  modality: str  # image | video | voxels
  task: str      # reconstruction | understanding

  def __post_init__(self):
    if self.modality not in tokens.MODALITY_IDS:
      raise ValueError(f"task modality must be image, video or voxels, got {self.modality!r}")
    if self.task not in tokens.TASK_IDS:
      raise ValueError(f"task must be reconstruction or understanding, got {self.task!r}")

  @property
  def terms(self) -> tuple[str, ...]:
    return TERMS[(self.modality, self.task)]


def weight(name: str, loss_cfg) -> float:
  """A term's factor in L: λ_KL for KL, λ_rec·λ_name for the L_rec terms, λ_sem for L_sem's."""
  if name == "kl":
    return loss_cfg.kl
  if name in REC_TERMS:
    return loss_cfg.rec * loss_cfg[name]
  if name in SEM_TERMS:
    return loss_cfg.sem
  raise ValueError(f"unknown loss term {name!r}")


def active_terms(kind: TaskKind, model_cfg: config_lib.ModelConfig, loss_cfg,
                 spec: frozen_lib.FrozenSpec) -> tuple[str, ...]:
  """The terms of `kind` that are computed: L1 always, KL for a continuous latent, the others
  when their weight is positive and their frozen network is loaded."""
  available = {
      "l1": True,
      "kl": model_cfg.quantizer is None,
      "lpips": bool(spec.lpips_net) and loss_cfg.lpips > 0,
      "gram": bool(spec.lpips_net) and loss_cfg.gram > 0,
      "clip": spec.teacher is not None and loss_cfg.clip > 0,
      "distill": spec.teacher is not None and loss_cfg.sem > 0,
      "sigmoid": loss_cfg.sem > 0,
  }
  return tuple(name for name in kind.terms if available[name])


# ---- helpers ------------------------------------------------------------------------------

def per_token(slot_values: jax.Array, sample_ids: jax.Array, fill=-1) -> jax.Array:
  """[B, S] per-slot values -> [B, L] per token (slot = sample_ids - 1); `fill` at padding."""
  idx = jnp.clip(sample_ids - 1, 0, slot_values.shape[1] - 1)
  vals = jnp.take_along_axis(slot_values, idx, axis=1)
  return jnp.where(sample_ids > 0, vals, fill)


def real_columns(modality_tok: jax.Array, width: int = config_lib.PATCH_DIM) -> jax.Array:
  """[B, L] modality -> [B, L, width] mask of the patch values that carry data: all 4 frames
  for video, frame 0 (the first 768 values) for images (time-padded) and voxels (zero-padded).
  A 768-wide batch holds only frame 0 (`atoken.patch_width`)."""
  col = jnp.arange(width)
  frame0 = col < config_lib.FRAME_PATCH_DIM
  return (modality_tok[..., None] == VIDEO) | ((modality_tok[..., None] >= 0) & frame0)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `values` where `mask` (same shape); 0, not NaN, when nothing is masked in."""
  mask = mask.astype(jnp.float32)
  return jnp.sum(values * mask) / jnp.maximum(mask.sum(), 1.0)


# ---- the terms: scalars, each a mean over what its mask covers --------------------------------

def l1_loss(recon: jax.Array, target: jax.Array, token_mask: jax.Array,
            modality_tok: jax.Array) -> jax.Array:
  """L1 at native resolution, averaged over patches (§3.3, as VQGAN): recon, target
  [B, L, 3072] (or 768: frame 0 only); the mean |recon - target| over each patch's real values
  (`real_columns` of `modality_tok` [B, L]), then the mean over the tokens in `token_mask`."""
  cols = real_columns(modality_tok, recon.shape[-1]).astype(jnp.float32)
  err = jnp.abs(recon.astype(jnp.float32) - target.astype(jnp.float32)) * cols
  per_patch = err.sum(-1) / jnp.maximum(cols.sum(-1), 1.0)
  return masked_mean(per_patch, token_mask)


def kl_loss(mean: jax.Array, logvar: jax.Array, token_mask: jax.Array) -> jax.Array:
  """KL(q || N(0, I)) of the latent posterior (§3.1), mean/logvar [B, L, C]: summed over the
  channels, averaged over the tokens in `token_mask` [B, L]."""
  return masked_mean(bottleneck.Posterior(mean, logvar).kl(), token_mask)


def lpips_loss(lpips_model: perceptual.LPIPS, lpips_params, recon: jax.Array, target: jax.Array,
               valid: jax.Array) -> jax.Array:
  """LPIPS (§3.3) of image pairs [N, 224, 224, 3] in [-1, 1], averaged over `valid` [N]."""
  return masked_mean(lpips_model.apply({"params": lpips_params}, recon, target), valid)


def gram_loss(lpips_params, recon: jax.Array, target: jax.Array, valid: jax.Array,
              net: str) -> jax.Array:
  """Gram (§3.3): Σ_l ‖G(Φ_l(x̂)) − G(Φ_l(x))‖²_F on the LPIPS trunk (`perceptual.gram_loss`
  says which layers and normalisation: the paper does not), averaged over `valid` [N]."""
  return masked_mean(perceptual.gram_loss(lpips_params, recon, target, net=net), valid)


def clip_perceptual_loss(recon_features: jax.Array, target_features: jax.Array,
                         valid: jax.Array) -> jax.Array:
  """CLIP-perceptual (§3.3; the paper names neither network nor distance): 1 - cos between the
  frozen SigLIP2 vision tower's token features [N, T, D] of the reconstruction and of the
  original, averaged over the T tokens, then over `valid` [N] images."""
  a, b = semantic.l2_normalize(recon_features), semantic.l2_normalize(target_features)
  per_image = (1.0 - jnp.sum(a * b, -1)).mean(-1)
  return masked_mean(per_image, valid)


# Image understanding (§3.3): KL(softmax(s_teacher / τ) || softmax(s_student / τ)) of the
# student's and the frozen SigLIP2 teacher's image-caption similarities, τ = 2.
distillation_loss = semantic.image_distillation_loss
# Video and 3D understanding (§3.3): SigLIP's pairwise sigmoid loss on image-caption pairs.
sigmoid_loss = semantic.sigmoid_loss


# ---- the loss of one batch -------------------------------------------------------------------

class _BatchTerms:
  """One batch's terms, each a method named as in TERMS, and what they share (masks, resized
  images, frozen-network features), each computed once on first use."""

  def __init__(self, nets, loss_cfg, params, frozen, batch, out):
    self.nets, self.cfg, self.params, self.frozen = nets, loss_cfg, params, frozen
    self.batch, self.out = batch, out
    self.b, self.s = batch.sample_index.shape
    self.token_mask = batch.sample_ids > 0
    self.modality_tok = per_token(batch.modality, batch.sample_ids)

  @functools.cached_property
  def rec_mask(self) -> jax.Array:
    """[B, L] tokens of reconstruction slots."""
    task_tok = per_token(self.batch.task, self.batch.sample_ids)
    return self.token_mask & (task_tok == RECONSTRUCTION)

  def _images(self, patches: jax.Array) -> jax.Array:
    """[B, L, 3072] -> every slot's frame 0 resized: [B*S, size, size, 3]."""
    batch, size = self.batch, self.cfg.perceptual_size
    if batch.image_rows is None:
      raise ValueError("the batch carries no perceptual resize weights: its data config needs "
                       "perceptual.size / max_side (`perceptual_inputs.data_canvas`)")
    slots = perceptual_inputs.slot_images(patches, batch.coords, batch.sample_ids, self.s,
                                          self.nets.max_grid)
    resized = perceptual_inputs.resize(slots, batch.image_rows, batch.image_cols)
    return resized.reshape(self.b * self.s, size, size, 3)

  @functools.cached_property
  def target_images(self) -> jax.Array:
    return jax.lax.stop_gradient(self._images(self.batch.patches))

  @functools.cached_property
  def recon_images(self) -> jax.Array:
    return self._images(self.out["reconstruction"])

  @functools.cached_property
  def rec_images_valid(self) -> jax.Array:
    """[B*S] image slots of reconstruction tasks."""
    return (self.batch.image_valid.reshape(-1)
            & (self.batch.task.reshape(-1) == RECONSTRUCTION))

  @functools.cached_property
  def teacher_on_target(self) -> tuple[jax.Array, jax.Array]:
    """The teacher's (token features [B*S, T, D], pooled [B*S, D]) of the original images."""
    out = self.nets.tower.apply({"params": self.frozen["teacher"]},
                                perceptual_inputs.teacher_inputs(self.target_images))
    return jax.lax.stop_gradient(out)

  @functools.cached_property
  def text(self) -> jax.Array:
    """[B*S, D] frozen text embeddings of the slots' captions."""
    batch, n = self.batch, self.b * self.s
    if batch.text_embedding is not None:
      text = batch.text_embedding.reshape(n, -1).astype(jnp.float32)
    else:
      text = siglip2_text.encode_texts(self.nets.spec.text, self.frozen["text"],
                                       batch.text_ids.reshape(n, -1))
    return jax.lax.stop_gradient(text)

  @functools.cached_property
  def understanding_slots(self) -> tuple[jax.Array, jax.Array]:
    """([B*S] captioned understanding slots, [B*S] their modality)."""
    batch = self.batch
    und = (batch.sample_index >= 0) & (batch.task == UNDERSTANDING) & batch.has_text
    return und.reshape(-1), batch.modality.reshape(-1)

  @functools.cached_property
  def student(self) -> jax.Array:
    return self.out["pooled"].reshape(self.b * self.s, -1).astype(jnp.float32)

  def l1(self):
    return l1_loss(self.out["reconstruction"], self.batch.patches, self.rec_mask,
                   self.modality_tok)

  def kl(self):
    return kl_loss(self.out["mean"], self.out["logvar"], self.rec_mask)

  def lpips(self):
    return lpips_loss(self.nets.lpips, self.frozen["lpips"], self.recon_images,
                      self.target_images, self.rec_images_valid)

  def gram(self):
    return gram_loss(self.frozen["lpips"], self.recon_images, self.target_images,
                     self.rec_images_valid, self.nets.spec.lpips_net)

  def clip(self):
    recon_features, _ = self.nets.tower.apply(
        {"params": self.frozen["teacher"]}, perceptual_inputs.teacher_inputs(self.recon_images))
    return clip_perceptual_loss(recon_features, self.teacher_on_target[0],
                                self.rec_images_valid)

  def distill(self):
    und, modality = self.understanding_slots
    return distillation_loss(self.student, self.teacher_on_target[1], self.text,
                             logit_scale=self.cfg.distill_logit_scale,
                             temperature=self.cfg.distill_temperature,
                             valid=und & (modality == IMAGE), axis=self.cfg.distill_axis)

  def sigmoid(self):
    und, modality = self.understanding_slots
    siglip = self.params["siglip"]
    return sigmoid_loss(self.student, self.text, siglip["logit_scale"], siglip["logit_bias"],
                        valid=und & (modality != IMAGE))


@dataclasses.dataclass(frozen=True)
class _Nets:
  spec: frozen_lib.FrozenSpec
  lpips: perceptual.LPIPS | None
  tower: frozen_lib.VisionTower | None
  max_grid: int


def total(values: dict[str, jax.Array], kind: TaskKind, loss_cfg) -> tuple[jax.Array, dict]:
  """-> (L, {"rec": L_rec, "sem": L_sem} for the groups `kind` has) from the active terms'
  values; L = Σ weight(name)·value, grouped as the paper writes it (λ_rec·(λ_1·L1 + ...))."""
  groups = {}
  if kind.task == "reconstruction":
    groups["rec"] = sum((loss_cfg[n] * values[n] for n in REC_TERMS if n in values),
                        jnp.float32(0))
  else:
    groups["sem"] = sum((values[n] for n in SEM_TERMS if n in values), jnp.float32(0))
  loss = 0.0
  if "kl" in values:
    loss = loss + loss_cfg.kl * values["kl"]
  for group, value in groups.items():
    loss = loss + loss_cfg[group] * value
  return loss, groups


def make_loss_fn(model_cfg: config_lib.ModelConfig, loss_cfg, spec: frozen_lib.FrozenSpec):
  """-> loss_fn(params, frozen, batch, rng, kind: TaskKind) -> (loss, metrics).

  params: {"model": ..., "siglip": {"logit_scale", "logit_bias"}}; frozen: the frozen networks'
  params (`frozen.load`); batch: an `atoken_jax.batch.Batch` (`for_device`) whose loss fields
  are set: `modality`, `task`, `text_ids` (or `text_embedding`), `has_text`, and for image
  tasks with a perceptual term or the teacher the resize weights `image_rows`, `image_cols`,
  `image_valid` (built by the data pipeline, `perceptual_inputs.data_canvas`).
  metrics: every active term by name, the groups `rec` / `sem`, `loss`, `tokens` and (for
  reconstruction) `rec_tokens`.
  """
  model = atoken_model.AToken(model_cfg)
  nets = _Nets(spec=spec,
               lpips=perceptual.LPIPS(spec.lpips_net) if spec.lpips_net else None,
               tower=frozen_lib.VisionTower(spec.teacher) if spec.teacher is not None else None,
               max_grid=loss_cfg.perceptual_max_side // config_lib.PATCH_HW)

  def loss_fn(params, frozen, batch, rng, kind: TaskKind):
    out = model.apply({"params": params["model"]}, batch, posterior="sample",
                      rngs={"posterior": rng})
    terms = _BatchTerms(nets, loss_cfg, params, frozen, batch, out)
    values = {name: getattr(terms, name)() for name in active_terms(kind, model_cfg, loss_cfg,
                                                                    spec)}
    loss, groups = total(values, kind, loss_cfg)
    metrics = {"tokens": terms.token_mask.sum(), **values, **groups, "loss": loss}
    if kind.task == "reconstruction":
      metrics["rec_tokens"] = terms.rec_mask.astype(jnp.float32).sum()
    return loss, metrics

  return loss_fn
