"""Model configuration: one frozen dataclass per network, presets by name.

The config is the single source of a model's shape, its FLOPs per token and (through
`atoken_jax.interop`) its foreign names. Presets: `tiny` (tests, CPU), `base` (SigLIP2-B/16
sized, the paper's ablation model) and `so400m` (the paper's model, Apple's So/C and So/D).
"""
from __future__ import annotations

import dataclasses
from typing import Literal, Optional

# Token format constants (spec §1.2): a patch is 4 frames x 16 x 16 pixels x RGB.
PATCH_T = 4
PATCH_HW = 16
PATCH_DIM = PATCH_T * PATCH_HW * PATCH_HW * 3  # 3072
FRAME_PATCH_DIM = PATCH_HW * PATCH_HW * 3  # 768: one frame of a patch; also a voxel feature
POS_GRID = 16  # the learned position table is 16 x 16
VOXEL_GRID = 64  # 3D assets live in a 64^3 grid over [-0.5, 0.5]^3
ATTENTION_IMPLS = ("auto", "dense", "block_sparse", "splash")


@dataclasses.dataclass(frozen=True)
class TrunkConfig:
  """One transformer stack (encoder or decoder)."""
  width: int
  depth: int
  num_heads: int
  mlp_dim: int

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  def validate(self, name: str) -> None:
    if self.width % self.num_heads:
      raise ValueError(f"{name}: width {self.width} is not divisible by num_heads {self.num_heads}")
    if self.head_dim % 8:
      raise ValueError(f"{name}: 4D RoPE needs head_dim % 8 == 0, got {self.head_dim}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The AToken autoencoder: encoder, semantic head, bottleneck, decoder.

  Attributes:
    latent_dim: C of the bottleneck (32 in stage 1, 48 after); `proj` emits 2*C (mean || logvar).
    quantizer: None (continuous KL posterior, So/C) or "fsq" (So/D).
    fsq_levels / fsq_codebooks: FSQ on the posterior mean, `fsq_codebooks` groups of
      len(fsq_levels) dims; latent_dim must equal their product.
    tile_latent_frames: temporal tile length in latent frames (4 = 16 video frames).
    decoder_kv_cache_frames: latent frames of the previous tile every decoder tile also attends
      to (0 = independent tiles, the release's default).
    use_rope: 4D RoPE in every self-attention layer (the release: on). Off only to check an
      encoder against SigLIP2, which has none.
    dtype: compute dtype of matmuls and attention; norms, RoPE, FSQ and the posterior always run
      in float32. param_dtype: storage dtype of the parameters (float32 master weights).
    scan_layers: stack each trunk's blocks and run them with `nn.scan` (one compiled block).
    remat: activation checkpointing policy per block: "none", "full" or "dots" (save matmuls).
    attention_impl: "auto" (TPU: "splash", else "block_sparse"), "dense" ([L, L] scores),
      "block_sparse" (only the attention blocks the batch's block table lists; without a table,
      keys in chunks of 1024 with an online softmax) or "splash" (Pallas TPU splash attention
      with a per-row dynamic mask; interpret mode off TPU). docs/attention.md.
  """
  encoder: TrunkConfig
  decoder: TrunkConfig
  latent_dim: int = 48
  quantizer: Optional[Literal["fsq"]] = None
  fsq_levels: tuple[int, ...] = (4, 4, 4, 4, 4, 4)
  fsq_codebooks: int = 8
  rope_theta: float = 10000.0
  use_rope: bool = True
  norm_eps: float = 1e-6
  tile_latent_frames: int = 4
  decoder_kv_cache_frames: int = 0
  dtype: str = "float32"
  param_dtype: str = "float32"
  scan_layers: bool = False
  remat: Literal["none", "full", "dots"] = "none"
  attention_impl: Literal["auto", "dense", "block_sparse", "splash"] = "auto"

  def __post_init__(self):
    self.encoder.validate("encoder")
    self.decoder.validate("decoder")
    if self.quantizer not in (None, "fsq"):
      raise ValueError(f"quantizer must be None or 'fsq', got {self.quantizer!r}")
    if self.quantizer == "fsq" and len(self.fsq_levels) * self.fsq_codebooks != self.latent_dim:
      raise ValueError(
          f"FSQ needs latent_dim == len(fsq_levels) * fsq_codebooks, got {self.latent_dim} != "
          f"{len(self.fsq_levels)} * {self.fsq_codebooks}")
    if not 0 <= self.decoder_kv_cache_frames <= self.tile_latent_frames:
      raise ValueError("decoder_kv_cache_frames must lie in [0, tile_latent_frames]")
    if self.remat not in ("none", "full", "dots"):
      raise ValueError(f"remat must be 'none', 'full' or 'dots', got {self.remat!r}")
    if not isinstance(self.latent_dim, int) or self.latent_dim <= 0:
      raise ValueError(f"latent_dim must be a positive integer, got {self.latent_dim!r}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"{name} must be float32, bfloat16 or float16, got "
                         f"{getattr(self, name)!r}")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got "
                       f"{self.attention_impl!r}")

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  def flops_per_token(self, seq_len: int, patch_dim: int = PATCH_DIM) -> float:
    """Forward FLOPs per token of encode + decode (matmuls and attention; 2 per MAC).

    `seq_len` is the number of tokens each token attends to (one temporal tile of a sample);
    `patch_dim` the patch values read and decoded (768 in frame-0 batches of images, voxels).
    The pooling head is excluded (its cost is per sample, not per token).
    """
    def trunk(t: TrunkConfig, d_in: int, d_out: int) -> float:
      per_block = 2 * (4 * t.width * t.width + 2 * t.width * t.mlp_dim)  # qkv+out, mlp
      per_block += 2 * 2 * seq_len * t.width  # q.k^T and attn.v
      return t.depth * per_block + 2 * d_in * t.width + 2 * t.width * d_out
    enc = trunk(self.encoder, patch_dim, 2 * self.latent_dim)
    dec = trunk(self.decoder, self.latent_dim, patch_dim)
    pos = 2 * 2 * POS_GRID * POS_GRID * (self.encoder.width + self.decoder.width) / 2
    return float(enc + dec + pos)


@dataclasses.dataclass(frozen=True)
class GaussianDecoderConfig:
  """TRELLIS-style 3D Gaussian decoder (spec §2.9)."""
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  in_dim: int = FRAME_PATCH_DIM
  window: int = 8
  softcap: float = 30.0
  num_gaussians: int = 32
  resolution: int = VOXEL_GRID
  voxel_size: float = 1.5  # offsets reach voxel_size/2 voxels from the centre
  lr_xyz: float = 1.0
  lr_features_dc: float = 1.0
  lr_scaling: float = 1.0
  lr_rotation: float = 0.1
  lr_opacity: float = 1.0
  scaling_bias: float = 4e-3
  opacity_bias: float = 0.1
  min_kernel_size: float = 9e-4
  aabb: tuple[float, ...] = (-0.5, -0.5, -0.5, 1.0, 1.0, 1.0)
  norm_eps: float = 1e-6
  dtype: str = "float32"
  param_dtype: str = "float32"

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  @property
  def out_dim(self) -> int:
    return self.num_gaussians * 14  # xyz 3, dc 3, scale 3, rotation 4, opacity 1


def _trunk(width, depth, heads, mlp):
  return TrunkConfig(width=width, depth=depth, num_heads=heads, mlp_dim=mlp)


PRESETS = {
    # CPU tests: head_dim 16 keeps every RoPE axis at 2 frequencies.
    "tiny": dict(encoder=_trunk(64, 2, 4, 128), decoder=_trunk(64, 2, 4, 128)),
    # SigLIP2-B/16 sized (the paper's capacity ablation).
    "base": dict(encoder=_trunk(768, 12, 12, 3072), decoder=_trunk(768, 12, 12, 3072)),
    # SigLIP2-So400m/16 sized: Apple's So/C and So/D.
    "so400m": dict(encoder=_trunk(1152, 27, 16, 4304), decoder=_trunk(1152, 27, 16, 4304)),
}

GAUSSIAN_PRESETS = {
    "tiny": dict(width=96, depth=2, num_heads=4, mlp_dim=192),
    "so400m": dict(),  # the released 3d_decode_gs: 12 blocks, width 768
}


def model_config(preset: str = "so400m", **overrides) -> ModelConfig:
  """Returns the named preset, with `overrides` applied (e.g. latent_dim=32, quantizer='fsq')."""
  if preset not in PRESETS:
    raise ValueError(f"unknown model preset {preset!r}; choose from {sorted(PRESETS)}")
  return ModelConfig(**{**PRESETS[preset], **overrides})


def model_config_to_dict(cfg: ModelConfig) -> dict:
  """ModelConfig -> plain nested dict (JSON- and ConfigDict-friendly: no quantizer is "")."""
  d = dataclasses.asdict(cfg)
  d["quantizer"] = d["quantizer"] or ""
  return d


def model_config_from_dict(d) -> ModelConfig:
  """The inverse of `model_config_to_dict` (also reads saved configs where quantizer is None).

  Unknown or missing fields and invalid values raise ValueError naming them."""
  d = dict(d)
  d.pop("attention_kv_chunk", None)  # retired by `attention_impl` (configs saved before it)
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(d) - known)
  if unknown:
    raise ValueError(f"unknown model config field(s) {unknown}; known: {sorted(known)}")
  for trunk in ("encoder", "decoder"):
    if trunk not in d:
      raise ValueError(f"the model config has no {trunk!r} section")
    try:
      d[trunk] = TrunkConfig(**dict(d[trunk]))
    except TypeError as e:
      raise ValueError(f"model {trunk}: {e}") from None
  d["quantizer"] = d.get("quantizer") or None
  if "fsq_levels" in d:
    d["fsq_levels"] = tuple(d["fsq_levels"])
  return ModelConfig(**d)


def gaussian_decoder_config(preset: str = "so400m", **overrides) -> GaussianDecoderConfig:
  if preset not in GAUSSIAN_PRESETS:
    raise ValueError(f"unknown Gaussian decoder preset {preset!r}; choose from "
                     f"{sorted(GAUSSIAN_PRESETS)}")
  return GaussianDecoderConfig(**{**GAUSSIAN_PRESETS[preset], **overrides})
