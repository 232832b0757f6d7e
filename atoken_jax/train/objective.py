"""The training objective (paper §4), every term masked so padding never contributes.

    L = w_rec * L_rec + w_sem * L_sem + w_kl * L_KL
    L_rec (images) = L1 + w_lpips * LPIPS + w_gram * Gram + w_clip * CLIP-perceptual
    L_rec (video, 3D) = L1

Terms are computed per sample slot from the packed batch; a slot's `task` (0 reconstruction,
1 understanding) and `modality` (0 image, 1 video, 2 voxels) decide which terms it enters.
Each term is a mean over the tokens (L1, KL) or samples (perceptual, semantic) it covers, so a
batch's loss does not depend on how much padding it carries.
"""
from __future__ import annotations

from typing import NamedTuple

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


def per_token(slot_values: jax.Array, sample_ids: jax.Array, fill=-1) -> jax.Array:
  """[B, S] per-slot values -> [B, L] per token (slot = sample_ids - 1); `fill` at padding."""
  idx = jnp.clip(sample_ids - 1, 0, slot_values.shape[1] - 1)
  vals = jnp.take_along_axis(slot_values, idx, axis=1)
  return jnp.where(sample_ids > 0, vals, fill)


def real_columns(modality_tok: jax.Array) -> jax.Array:
  """[B, L] modality -> [B, L, 3072] mask of the patch values that carry data: all 4 frames for
  video, frame 0 (the first 768 values) for images (time-padded) and voxels (zero-padded)."""
  col = jnp.arange(config_lib.PATCH_DIM)
  frame0 = col < config_lib.FRAME_PATCH_DIM
  return (modality_tok[..., None] == VIDEO) | ((modality_tok[..., None] >= 0) & frame0)


def masked_mean(values: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """-> (mean of values where mask, count). A zero count gives 0, not NaN."""
  mask = mask.astype(jnp.float32)
  n = mask.sum()
  return jnp.sum(values * mask) / jnp.maximum(n, 1.0), n


def l1_per_patch(recon: jax.Array, target: jax.Array, token_mask: jax.Array,
                 modality_tok: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean |recon - target| over each patch's real values, averaged over the masked tokens."""
  cols = real_columns(modality_tok).astype(jnp.float32)
  err = jnp.abs(recon.astype(jnp.float32) - target.astype(jnp.float32)) * cols
  per_patch = err.sum(-1) / jnp.maximum(cols.sum(-1), 1.0)
  return masked_mean(per_patch, token_mask)


def kl_per_token(mean: jax.Array, logvar: jax.Array, token_mask: jax.Array):
  """KL(q || N(0, I)) summed over channels, averaged over the masked tokens."""
  return masked_mean(bottleneck.Posterior(mean, logvar).kl(), token_mask)


class Terms(NamedTuple):
  """Which loss terms a task's batches can have (static: one compile per task)."""
  reconstruction: bool = True
  understanding: bool = False
  images: bool = True  # image slots present: perceptual terms / distillation apply


def terms_for(modality: str, task: str) -> Terms:
  if modality not in ("image", "video", "voxels"):
    raise ValueError(f"task modality must be image, video or voxels, got {modality!r}")
  if task not in ("reconstruction", "understanding"):
    raise ValueError(f"task must be reconstruction or understanding, got {task!r}")
  return Terms(reconstruction=task == "reconstruction", understanding=task == "understanding",
               images=modality == "image")


def _cosine_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  """1 - cos(a, b) over the last axis."""
  a, b = semantic.l2_normalize(a), semantic.l2_normalize(b)
  return 1.0 - jnp.sum(a * b, -1)


def make_loss_fn(model_cfg: config_lib.ModelConfig, loss_cfg, spec: frozen_lib.FrozenSpec):
  """-> loss_fn(params, frozen, batch, rng, terms) -> (loss, metrics).

  params: {"model": ..., "siglip": {"logit_scale", "logit_bias"}}; frozen: the frozen networks'
  params (`frozen.load`); batch: model inputs plus per-slot `modality`, `task` [B, S],
  `text_ids` [B, S, T] / `text_embedding` [B, S, D], `has_text` [B, S], and for image tasks
  `image_rows`, `image_cols`, `image_valid` (`perceptual_inputs.resize_weights`).
  """
  model = atoken_model.AToken(model_cfg)
  use_kl = model_cfg.quantizer is None
  tower = frozen_lib.VisionTower(spec.teacher) if spec.teacher is not None else None
  lpips_model = perceptual.LPIPS(spec.lpips_net) if spec.lpips_net else None
  max_grid = loss_cfg.perceptual_max_side // config_lib.PATCH_HW

  def loss_fn(params, frozen, batch, rng, terms: Terms = Terms()):
    out = model.apply({"params": params["model"]}, batch, posterior="sample",
                      rngs={"posterior": rng})
    sample_ids = batch["sample_ids"]
    b, s = batch["sample_index"].shape
    present = batch["sample_index"] >= 0
    token_mask = sample_ids > 0
    modality_tok = per_token(batch["modality"], sample_ids)
    metrics, loss = {"tokens": token_mask.sum()}, 0.0
    teacher_pooled = None

    if terms.reconstruction:
      rec_mask = token_mask & (per_token(batch["task"], sample_ids) == RECONSTRUCTION)
      l1, n_rec = l1_per_patch(out["reconstruction"], batch["patches"], rec_mask, modality_tok)
      rec = loss_cfg.l1 * l1
      metrics.update(l1=l1, rec_tokens=n_rec)
      if use_kl:
        kl, _ = kl_per_token(out["mean"], out["logvar"], rec_mask)
        loss = loss + loss_cfg.kl * kl
        metrics["kl"] = kl
    if terms.images and (lpips_model is not None or tower is not None):
      to_img = lambda p: perceptual_inputs.resize(
          perceptual_inputs.slot_images(p, batch["coords"], sample_ids, s, max_grid),
          batch["image_rows"], batch["image_cols"]).reshape(b * s, loss_cfg.perceptual_size,
                                                           loss_cfg.perceptual_size, 3)
      target = jax.lax.stop_gradient(to_img(batch["patches"]))
      image_valid = batch["image_valid"].reshape(-1)
      if tower is not None:
        t_feats, teacher_pooled = tower.apply(
            {"params": frozen["teacher"]}, perceptual_inputs.teacher_inputs(target))
        t_feats, teacher_pooled = jax.lax.stop_gradient((t_feats, teacher_pooled))
      if terms.reconstruction:
        rec_img = to_img(out["reconstruction"])
        rec_valid = image_valid & (batch["task"].reshape(-1) == RECONSTRUCTION)
        if lpips_model is not None and loss_cfg.lpips > 0:
          d = lpips_model.apply({"params": frozen["lpips"]}, rec_img, target)
          lp, _ = masked_mean(d, rec_valid)
          rec, metrics["lpips"] = rec + loss_cfg.lpips * lp, lp
        if lpips_model is not None and loss_cfg.gram > 0:
          g = perceptual.gram_loss(frozen["lpips"], rec_img, target, net=spec.lpips_net)
          gm, _ = masked_mean(g, rec_valid)
          rec, metrics["gram"] = rec + loss_cfg.gram * gm, gm
        if tower is not None and loss_cfg.clip > 0:
          r_feats, _ = tower.apply({"params": frozen["teacher"]},
                                   perceptual_inputs.teacher_inputs(rec_img))
          per_image = _cosine_distance(r_feats, t_feats).mean(-1)
          cp, _ = masked_mean(per_image, rec_valid)
          rec, metrics["clip"] = rec + loss_cfg.clip * cp, cp
    if terms.reconstruction:
      loss = loss + loss_cfg.rec * rec
      metrics["rec"] = rec

    if terms.understanding and loss_cfg.sem > 0:
      if "text_embedding" in batch:
        text = batch["text_embedding"].reshape(b * s, -1).astype(jnp.float32)
      else:
        text = siglip2_text.encode_texts(spec.text, frozen["text"],
                                         batch["text_ids"].reshape(b * s, -1))
      text = jax.lax.stop_gradient(text)
      und = (present & (batch["task"] == UNDERSTANDING) & batch["has_text"]).reshape(-1)
      student = out["pooled"].reshape(b * s, -1).astype(jnp.float32)
      mod = batch["modality"].reshape(-1)
      sem = 0.0
      if terms.images and teacher_pooled is not None:
        distill = semantic.image_distillation_loss(
            student, teacher_pooled, text, logit_scale=loss_cfg.distill_logit_scale,
            temperature=loss_cfg.distill_temperature, valid=und & (mod == IMAGE),
            axis=loss_cfg.distill_axis)
        sem, metrics["distill"] = sem + distill, distill
      if not terms.images:
        sig = semantic.sigmoid_loss(student, text, params["siglip"]["logit_scale"],
                                    params["siglip"]["logit_bias"], valid=und & (mod != IMAGE))
        sem, metrics["sigmoid"] = sem + sig, sig
      loss = loss + loss_cfg.sem * sem
      metrics["sem"] = sem
    metrics["loss"] = loss
    return loss, metrics

  return loss_fn
