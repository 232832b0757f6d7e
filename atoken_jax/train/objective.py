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

import jax
import jax.numpy as jnp

from atoken_jax import config as config_lib
from atoken_jax.model import bottleneck

IMAGE, VIDEO, VOXELS = 0, 1, 2
RECONSTRUCTION, UNDERSTANDING = 0, 1


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


def make_loss_fn(model_cfg: config_lib.ModelConfig, loss_cfg):
  """-> loss_fn(params, batch, rng) -> (loss, metrics) over a packed, annotated batch.

  params: {"model": ..., "siglip": ...}; batch: the model inputs plus per-slot `modality` and
  `task` [B, S]. Metrics are per-micro-batch means (and token counts).
  """
  from atoken_jax.model import atoken as atoken_model  # pylint: disable=import-outside-toplevel
  model = atoken_model.AToken(model_cfg)
  use_kl = model_cfg.quantizer is None

  def loss_fn(params, batch, rng):
    out = model.apply({"params": params["model"]}, batch, posterior="sample",
                      rngs={"posterior": rng})
    sample_ids = batch["sample_ids"]
    token_mask = sample_ids > 0
    modality_tok = per_token(batch["modality"], sample_ids)
    rec_mask = token_mask & (per_token(batch["task"], sample_ids) == RECONSTRUCTION)
    l1, n_rec = l1_per_patch(out["reconstruction"], batch["patches"], rec_mask, modality_tok)
    rec = loss_cfg.l1 * l1
    loss = loss_cfg.rec * rec
    metrics = {"l1": l1, "rec_tokens": n_rec, "tokens": token_mask.sum()}
    if use_kl:
      kl, _ = kl_per_token(out["mean"], out["logvar"], rec_mask)
      loss = loss + loss_cfg.kl * kl
      metrics["kl"] = kl
    metrics["loss"] = loss
    return loss, metrics

  return loss_fn
