"""Defaults of the Gaussian-decoder runs (`experiments/gs_decoder_alone.py`, `..._joint.py`).

  mode "alone": only the Gaussian decoder trains. Its voxel features are the ground truth's
    (`features="ground_truth"`) or a frozen tokenizer's reconstruction (`"tokenizer"`).
  mode "joint": the Gaussian decoder and the tokenizer parameters named in
    `tokenizer.trainable` (default: its decoder) train together on the same objective, plus
    optionally the tokenizer's own 3D L1 on the voxel features (`loss.rec_l1`).

Values marked "ours" are not given by the paper or the release; the loss weights, renderer
settings and the Gaussian parameterisation are the release's (spec §2.9).
"""
from __future__ import annotations

import ml_collections

from atoken_jax.gs3d import data as data_lib


def default_config(preset: str = "so400m", mode: str = "alone") -> ml_collections.ConfigDict:
  if preset not in ("tiny", "so400m"):
    raise ValueError(f"preset must be 'tiny' or 'so400m', got {preset!r}")
  if mode not in ("alone", "joint"):
    raise ValueError(f"mode must be 'alone' or 'joint', got {mode!r}")
  tiny = preset == "tiny"
  c = ml_collections.ConfigDict()
  c.preset, c.mode, c.seed = preset, mode, 0
  c.features = "tokenizer" if mode == "joint" else "ground_truth"
  c.total_steps = 20 if tiny else 100_000  # ours
  c.log_every = 5 if tiny else 50
  c.ckpt_every = 10 if tiny else 2_000
  c.keep, c.keep_every, c.async_checkpoints = 3, 0, True
  c.max_consecutive_nonfinite = 20
  c.mesh = ml_collections.ConfigDict(dict(
      data=-1, fsdp=1, tensor=1,
      num_devices=0))  # 0 = every device; N = the first N (smoke runs, debugging)

  c.gs = ml_collections.ConfigDict(dict(
      preset=preset,           # GaussianDecoderConfig preset ("tiny": width 96, depth 2)
      num_gaussians=4 if tiny else 0,  # 0 = the preset's (32); tiny: 4 keeps CPU renders quick
      attention="packed",      # "packed": O(N) windows built on the host; "masked": O(N²)
      remat="none" if tiny else "full",  # "none" | "full": recompute each block's activations
      init_weights="",         # start from ml-atoken 3d_decode_gs weights (.safetensors / .pt)
      init_yaml=""))           # ... and their yaml (default: the released configuration)
  c.tokenizer = ml_collections.ConfigDict(dict(
      workdir="",              # an `atoken train` workdir (its newest checkpoint) ...
      step=-1, use_ema=True,
      ml_atoken="", yaml="",   # ... or Apple's released weights + yaml
      preset="tiny", latent_dim=48,  # random weights of this preset (tiny runs only)
      remat="",                # "" = the tokenizer's own; "full" saves memory in joint mode
      posterior="mean",        # "sample": decode mean + sigma * noise, as the release's wrapper
      trainable=("decoder",)))  # joint mode: AToken top-level parameter groups that train
  c.data = data_lib.data_config(preset)
  c.render = ml_collections.ConfigDict(dict(
      filter_2d=0.1, mip=True, background=(0.0, 0.0, 0.0), near=0.2, far=100.0,
      max_pairs=0,             # 0 = the renderer's default (8 pairs per Gaussian)
      tile_capacity=0))        # 0 = no limit
  c.loss = ml_collections.ConfigDict(dict(
      l1=1.0, lpips=0.2, ssim=0.2,
      ssim_scales=3 if tiny else 5,  # 64 px fits 3 MS-SSIM scales; 5 need > 160 px
      lpips_net="vgg",
      lpips_weights="",        # tools/convert_lpips_weights.py output; "" = random (tiny only)
      rec_l1=1.0 if mode == "joint" else 0.0,  # joint: the tokenizer's 3D L1 (ours)
      kl=1e-8))                # joint, KL models: the tokenizer's KL weight (paper §4)
  c.optim = ml_collections.ConfigDict(dict(
      lr=1e-3 if tiny else 1e-4, end_lr=1e-4 if tiny else 1e-5,  # ours
      warmup_steps=2 if tiny else 1_000, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0,
      encoder_lr_mult=0.1, clip_norm=1.0, ema_decay=0.9 if tiny else 0.9999))
  return c
