"""The AToken autoencoder in Flax linen: encoder, semantic head, bottleneck, decoder.

All methods take a packed `atoken_jax.batch.Batch` and read its model fields
(`batch.MODEL_FIELDS`): patches [B, L, 3072] (or 768, `patch_width`), coords [B, L, 4],
segment_ids, sample_ids, tile_index [B, L], pos_row_weights / pos_col_weights [B, L, 16],
sample_index [B, S] and the attention block table attn_pairs / attn_kv_counts (None:
attention walks every key).
Everything depends only on those arrays' shapes, so one compile serves one shape bucket.
The attention masks read per-token metadata dicts (`Batch.mask_info`).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from atoken_jax import config as config_lib
from atoken_jax.batch import Batch
from atoken_jax.model import attention, bottleneck, layers, rope, transformer

Info = dict[str, jax.Array]  # per-token mask metadata (`Batch.mask_info`)


def segment_mask(q: Info, k: Info) -> jax.Array:
  """Attention within one (sample, temporal tile) group."""
  return attention.same_group(q["segment_ids"], k["segment_ids"])


def tile_cache_mask(q: Info, k: Info, *, cache_frames: int, tile_frames: int) -> jax.Array:
  """Within a tile, plus the last `cache_frames` latent frames of the sample's previous tile.

  Equal to the release's decoder KV cache (pre-RoPE K/V of the previous tile's last frames
  prepended to the next tile) when RoPE uses sample-global t: each tile's keys and values at a
  layer depend only on earlier tiles, so computing all tiles at once gives the same numbers.
  """
  same_sample = (q["sample_ids"][:, :, None] == k["sample_ids"][:, None, :]) & (
      q["sample_ids"][:, :, None] > 0)
  prev_tile = k["tile_index"][:, None, :] == q["tile_index"][:, :, None] - 1
  recent = k["coords"][:, None, :, 0] >= tile_frames - cache_frames
  return segment_mask(q, k) | (same_sample & prev_tile & recent)


def _rope(cfg: config_lib.ModelConfig, positions: jax.Array, head_dim: int):
  return rope.rope_angles(positions, head_dim, cfg.rope_theta) if cfg.use_rope else None


def _dtype(name: str):
  return jnp.dtype(name)


class PositionTable(nn.Module):
  """The learned 16x16 table [256, C], resized per (sample, tile) and gathered at (row, col).

  Resize-then-gather equals row_w @ T @ col_w^T per channel, with the antialiased bilinear
  weights computed on the host (`atoken_jax.pos_interp`).
  """
  width: int
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, row_w: jax.Array, col_w: jax.Array) -> jax.Array:
    g = config_lib.POS_GRID
    table = self.param("embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("pos", "embed")), (g * g, self.width), self.param_dtype)
    w = (row_w[..., :, None] * col_w[..., None, :]).reshape(*row_w.shape[:-1], g * g)
    return jnp.einsum("blp,pc->blc", w.astype(jnp.float32), table.astype(jnp.float32))


def _block_kwargs(cfg: config_lib.ModelConfig, trunk: config_lib.TrunkConfig, *, decoder: bool,
                  mask_fn) -> dict:
  return dict(num_heads=trunk.num_heads, mlp_dim=trunk.mlp_dim, rms_norm=decoder,
              use_bias=not decoder, qk_norm=decoder, mask_fn=mask_fn, eps=cfg.norm_eps,
              attention_impl=cfg.attention_impl, dtype=_dtype(cfg.dtype),
              param_dtype=_dtype(cfg.param_dtype))


class Encoder(nn.Module):
  """patches -> features [B, L, C] after the final LayerNorm (LayerNorm+bias, GELU-tanh)."""
  cfg: config_lib.ModelConfig

  @nn.compact
  def __call__(self, batch: Batch) -> jax.Array:
    cfg, t = self.cfg, self.cfg.encoder
    dtype, pdtype = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    x = layers.dense(t.width, ("patch", "embed"), use_bias=True, dtype=dtype, param_dtype=pdtype,
                     name="input_layer", in_features=config_lib.PATCH_DIM)(
                         batch.patches.astype(dtype))
    x = x + PositionTable(t.width, pdtype, name="pos_embedder")(
        batch.pos_row_weights, batch.pos_col_weights).astype(dtype)
    angles = _rope(cfg, batch.coords, t.head_dim)
    x = transformer.BlockStack(
        t.depth, _block_kwargs(cfg, t, decoder=False, mask_fn=segment_mask),
        scan=cfg.scan_layers, remat=cfg.remat,
        name="transformer")(x, angles, batch.mask_info())
    return layers.LayerNorm(cfg.norm_eps, param_dtype=pdtype, name="post_layernorm")(x)


class Decoder(nn.Module):
  """latent [B, L, latent_dim] -> patches [B, L, patch_dim] (RMSNorm, qk-norm, no biases);
  patch_dim 768 computes only frame 0 of each patch (`patch_width`)."""
  cfg: config_lib.ModelConfig

  @nn.compact
  def __call__(self, latent: jax.Array, batch: Batch,
               patch_dim: int = config_lib.PATCH_DIM) -> jax.Array:
    cfg, t = self.cfg, self.cfg.decoder
    dtype, pdtype = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    x = layers.dense(t.width, ("latent", "embed"), use_bias=False, dtype=dtype,
                     param_dtype=pdtype, name="input_layer")(latent.astype(dtype))
    x = x + PositionTable(t.width, pdtype, name="pos_embedder")(
        batch.pos_row_weights, batch.pos_col_weights).astype(dtype)
    positions = batch.coords
    mask_fn = segment_mask
    if cfg.decoder_kv_cache_frames:
      positions = positions.at[..., 0].add(batch.tile_index * cfg.tile_latent_frames)
      mask_fn = functools.partial(tile_cache_mask, cache_frames=cfg.decoder_kv_cache_frames,
                                  tile_frames=cfg.tile_latent_frames)
    angles = _rope(cfg, positions, t.head_dim)
    x = transformer.BlockStack(
        t.depth, _block_kwargs(cfg, t, decoder=True, mask_fn=mask_fn),
        scan=cfg.scan_layers, remat=cfg.remat,
        name="transformer")(x, angles, batch.mask_info())
    x = layers.RMSNorm(cfg.norm_eps, param_dtype=pdtype, name="out_norm")(x)
    return layers.dense(config_lib.PATCH_DIM, ("embed", "patch"), use_bias=False, dtype=dtype,
                        param_dtype=pdtype, name="out_layer")(x, out_features=patch_dim)


class MAPHead(nn.Module):
  """SigLIP attention pooling: one learned probe per sample slot over all its tokens (all
  tiles), then a + MLP(LayerNorm(a)). features [B, L, C], sample_ids [B, L] -> [B, S, C]."""
  num_heads: int
  mlp_dim: int
  eps: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, sample_ids: jax.Array, num_slots: int) -> jax.Array:
    c = x.shape[-1]
    h, d = self.num_heads, c // self.num_heads
    kw = dict(use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype)
    probe = self.param("probe", nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                             ("embed",)), (c,), self.param_dtype)
    q = layers.dense((h, d), ("embed", "heads", "kv"), name="query", **kw)(
        probe.astype(self.dtype))
    kv = layers.dense((2, h, d), ("embed", "qkv", "heads", "kv"), name="key_value", **kw)(x)
    s = jnp.einsum("hd,blhd->bhl", q, kv[:, :, 0], preferred_element_type=jnp.float32)
    s = s * d ** -0.5
    slots = jnp.arange(1, num_slots + 1, dtype=sample_ids.dtype)
    member = sample_ids[:, None, :] == slots[None, :, None]  # [B, S, L]
    s = jnp.where(member[:, :, None, :], s[:, None], -1e30)  # [B, S, H, L]
    p = jax.nn.softmax(s, axis=-1).astype(kv.dtype)
    a = jnp.einsum("bshl,blhd->bshd", p, kv[:, :, 1])
    a = layers.dense(c, ("heads", "kv", "embed"), in_axis=(-2, -1), name="out", **kw)(a)
    y = layers.LayerNorm(self.eps, param_dtype=self.param_dtype, name="layernorm")(a)
    return a + layers.Mlp(self.mlp_dim, name="mlp", **kw)(y)


class AToken(nn.Module):
  """Encoder + semantic head + bottleneck (KL posterior or FSQ) + decoder."""
  cfg: config_lib.ModelConfig

  def setup(self):
    cfg = self.cfg
    dtype, pdtype = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    self.encoder = Encoder(cfg)
    self.head = MAPHead(cfg.encoder.num_heads, cfg.encoder.mlp_dim, cfg.norm_eps, dtype, pdtype)
    self.proj = layers.dense(2 * cfg.latent_dim, ("embed", "latent"), use_bias=False,
                             dtype=dtype, param_dtype=pdtype, name="proj")
    self.decoder = Decoder(cfg)
    self.fsq = (bottleneck.FSQ(cfg.fsq_levels, cfg.fsq_codebooks)
                if cfg.quantizer == "fsq" else None)

  def encode(self, batch: Batch) -> dict[str, jax.Array]:
    """-> features [B,L,C], pooled [B,S,C] (not normalised), mean/logvar [B,L,latent] (f32)."""
    features = self.encoder(batch)
    pooled = self.head(features, batch.sample_ids, batch.sample_index.shape[-1])
    post = bottleneck.Posterior.from_moments(self.proj(features))
    return dict(features=features, pooled=pooled, mean=post.mean, logvar=post.logvar)

  def latent(self, enc: dict[str, jax.Array], posterior: str = "mean") -> dict[str, jax.Array]:
    """The decoder's input: FSQ codes of the mean (FSQ models), else the posterior's mean or a
    sample (rng stream 'posterior')."""
    if self.fsq is not None:
      codes, indices = self.fsq.quantize(enc["mean"])
      return dict(latent=codes, codes=codes, indices=indices)
    if posterior == "mean":
      return dict(latent=enc["mean"])
    if posterior == "sample":
      post = bottleneck.Posterior(enc["mean"], enc["logvar"])
      return dict(latent=post.sample(self.make_rng("posterior")))
    raise ValueError(f"posterior must be 'mean' or 'sample', got {posterior!r}")

  def decode(self, latent: jax.Array, batch: Batch) -> jax.Array:
    """latent [B, L, latent_dim] -> reconstructed patches [B, L, w] in pixel space, w the
    batch's patch width (`patch_width`: 768 = frame 0 only, for single-frame batches)."""
    return self.decoder(latent, batch, patch_width(batch))

  def __call__(self, batch: Batch, posterior: str = "sample") -> dict[str, jax.Array]:
    enc = self.encode(batch)
    enc.update(self.latent(enc, posterior))
    enc["reconstruction"] = self.decode(enc["latent"], batch)
    return enc


def patch_width(batch: Batch) -> int:
  """The width of the batch's patches: 3072 (4 frames), or 768 when every sample in the batch
  is single-frame (images, voxels): frames 1-3 of their patches are zero padding, which the
  encoder's input layer would multiply by zero and the decoder's frames would be discarded,
  so neither is computed (`packing.pack_greedy`'s `patch_dim`)."""
  width = batch.patches.shape[-1] if batch.patches is not None else config_lib.PATCH_DIM
  if width not in (config_lib.FRAME_PATCH_DIM, config_lib.PATCH_DIM):
    raise ValueError(f"patches must be {config_lib.PATCH_DIM} (4 frames) or "
                     f"{config_lib.FRAME_PATCH_DIM} (frame 0) wide, got {width}")
  return width


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  x32 = x.astype(jnp.float32)
  return x32 / jnp.maximum(jnp.linalg.norm(x32, axis=-1, keepdims=True), eps)
