"""A small, independent PyTorch implementation of the ml-atoken autoencoder's forward pass.

Written from `shared/reference/ml_atoken_spec.md` (§1.4, §2.1-2.8), not from our JAX model, so
that tests can prove an exported checkpoint without Apple's code (which needs flash-attn or
xformers). Module names and parameter shapes are ml-atoken's, so an ml-atoken state dict loads
with `load_state_dict(strict=True)`. Float32, CPU, inference only; attention is computed per
sample with a python loop (the release's varlen attention).

Inputs use ml-atoken's sparse format:
  feats  [N, 3072] float patches, (pt, ph, pw, c) order;
  coords [N, 5] int (batch, t, x = patch row, y = patch column, z), rows sorted by batch.

Video is cut into batch-wide temporal tiles of 4 latent frames (t made tile-local); the encoder
and decoder trunks run per tile, the pooling head and `proj` on all tokens of a sample.

Needs the `torch` extra: pip install 'atoken-jax[torch]'.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PATCH_DIM = 3072
POS_GRID = 16
NORM_EPS = 1e-6


# --------------------------------------------------------------------------- layout helpers


def sample_slices(batch_ids: torch.Tensor) -> list[slice]:
  """[n] batch ids, sorted -> one slice of rows per batch element present."""
  if batch_ids.numel() and bool((batch_ids[1:] < batch_ids[:-1]).any()):
    raise ValueError("coords rows must be sorted by batch id (column 0)")
  _, counts = torch.unique_consecutive(batch_ids, return_counts=True)
  ends = torch.cumsum(counts, 0).tolist()
  return [slice(e - n, e) for e, n in zip(ends, counts.tolist())]


def temporal_tiles(coords: torch.Tensor, tile_frames: int = 4
                   ) -> list[tuple[torch.Tensor, torch.Tensor]]:
  """Batch-wide temporal tiles [t_min + k*tile, t_min + (k+1)*tile) (spec §1.4).

  Returns:
    [(rows [n_k] long, local coords [n_k, 5] with tile-local t)] for every non-empty tile.
  """
  t = coords[:, 1].long()
  t_min = int(t.min())
  tile = (t - t_min) // tile_frames
  tiles = []
  for k in range(int(tile.max()) + 1):
    rows = torch.nonzero(tile == k).flatten()
    if rows.numel():
      local = coords[rows].clone()
      local[:, 1] -= t_min + k * tile_frames
      tiles.append((rows, local))
  return tiles


# --------------------------------------------------------------------------- layers


class RMSNorm(nn.Module):
  """x * rsqrt(mean(x^2) + eps) * weight, in float32."""

  def __init__(self, width: int, eps: float = NORM_EPS):
    super().__init__()
    self.eps = eps
    self.weight = nn.Parameter(torch.ones(width))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x32 = x.float()
    y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
    return (y * self.weight.float()).to(x.dtype)


class MultiHeadRMSNorm(nn.Module):
  """qk-norm: L2-normalise each head over D, times gamma [H, D] and sqrt(D), in float32."""

  def __init__(self, num_heads: int, head_dim: int):
    super().__init__()
    self.gamma = nn.Parameter(torch.ones(num_heads, head_dim))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """x [n, H, D] -> [n, H, D]."""
    y = F.normalize(x.float(), dim=-1) * self.gamma.float() * math.sqrt(x.shape[-1])
    return y.to(x.dtype)


class FeedForward(nn.Module):
  """`mlp.0` Linear(C -> M), GELU(tanh), `mlp.2` Linear(M -> C)."""

  def __init__(self, width: int, mlp_dim: int, bias: bool):
    super().__init__()
    self.mlp = nn.Sequential(nn.Linear(width, mlp_dim, bias=bias), nn.GELU(approximate="tanh"),
                             nn.Linear(mlp_dim, width, bias=bias))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.mlp(x)


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> torch.Tensor:
  """positions [n, 4] (t, x, y, z) -> angles [n, head_dim/2]: per axis i = 0..D/8-1,
  pos * theta^(-i/D) (exponent over the full head dim), axis blocks [t | x | y | z]."""
  n = head_dim // 8
  freqs = theta ** (-torch.arange(n, dtype=torch.float32) / head_dim)
  return (positions.float()[:, :, None] * freqs).reshape(positions.shape[0], 4 * n)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
  """Rotates interleaved pairs (2j, 2j+1) of x [n, H, D] by angles [n, D/2], in float32."""
  pairs = x.float().reshape(*x.shape[:-1], -1, 2)
  rotation = torch.polar(torch.ones_like(angles), angles)[:, None, :]  # [n, 1, D/2]
  rotated = torch.view_as_complex(pairs.contiguous()) * rotation
  return torch.view_as_real(rotated).reshape(x.shape).to(x.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
  """softmax(q k^T / sqrt(D)) v for q [nq, H, D], k / v [nk, H, D] -> [nq, H, D]."""
  scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
  return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


class SelfAttention(nn.Module):
  """`to_qkv` (rows q | k | v, head-major), optional qk-norm, 4D RoPE, per-sample attention."""

  def __init__(self, width: int, num_heads: int, bias: bool, qk_norm: bool):
    super().__init__()
    self.num_heads = num_heads
    self.head_dim = width // num_heads
    self.to_qkv = nn.Linear(width, 3 * width, bias=bias)
    if qk_norm:
      self.q_rms_norm = MultiHeadRMSNorm(num_heads, self.head_dim)
      self.k_rms_norm = MultiHeadRMSNorm(num_heads, self.head_dim)
    self.qk_norm = qk_norm
    self.to_out = nn.Linear(width, width, bias=bias)

  def forward(self, x: torch.Tensor, angles: torch.Tensor, samples: list[slice]) -> torch.Tensor:
    """x [n, C], angles [n, D/2] or None (no RoPE), samples: row slices that attend among
    themselves."""
    q, k, v = self.to_qkv(x).reshape(x.shape[0], 3, self.num_heads, self.head_dim).unbind(1)
    if self.qk_norm:
      q, k = self.q_rms_norm(q), self.k_rms_norm(k)
    if angles is not None:
      q, k = apply_rope(q, angles), apply_rope(k, angles)
    out = torch.empty_like(q)
    for s in samples:
      out[s] = attention(q[s], k[s], v[s])
    return self.to_out(out.reshape(x.shape))


class Block(nn.Module):
  """Pre-norm: x + attn(norm1(x)); x + mlp(norm2(x))."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int, decoder: bool):
    super().__init__()
    norm = (lambda: RMSNorm(width)) if decoder else (lambda: nn.LayerNorm(width, eps=NORM_EPS))
    self.norm1 = norm()
    self.attn = SelfAttention(width, num_heads, bias=not decoder, qk_norm=decoder)
    self.norm2 = norm()
    self.mlp = FeedForward(width, mlp_dim, bias=not decoder)

  def forward(self, x, angles, samples):
    x = x + self.attn(self.norm1(x), angles, samples)
    return x + self.mlp(self.norm2(x))


class PositionTable(nn.Module):
  """The learned 16x16 table `position_embedding.weight` [256, C] (entry row*16 + col)."""

  def __init__(self, width: int):
    super().__init__()
    self.position_embedding = nn.Embedding(POS_GRID * POS_GRID, width)

  def forward(self, coords: torch.Tensor, samples: list[slice]) -> torch.Tensor:
    """coords [n, 5] of one temporal tile -> [n, C]: per sample, the table resized to
    (max row + 1, max col + 1) (bilinear, antialiased, align_corners False), gathered."""
    grid = self.position_embedding.weight.float().reshape(POS_GRID, POS_GRID, -1)
    grid = grid.permute(2, 0, 1)[None]  # [1, C, 16, 16]
    out = torch.empty(coords.shape[0], grid.shape[1], dtype=torch.float32)
    for s in samples:
      rows, cols = coords[s, 2].long(), coords[s, 3].long()
      h, w = int(rows.max()) + 1, int(cols.max()) + 1
      resized = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False,
                              antialias=True)[0]
      out[s] = resized[:, rows.clamp(0, h - 1), cols.clamp(0, w - 1)].T
    return out


class Trunk(nn.Module):
  """input_layer + learned positions + pre-norm blocks with 4D RoPE, on one temporal tile."""

  def __init__(self, in_dim: int, width: int, depth: int, num_heads: int, mlp_dim: int,
               decoder: bool, rope_theta: float, use_rope: bool = True):
    super().__init__()
    self.pos_embedder = PositionTable(width)
    self.input_layer = nn.Linear(in_dim, width, bias=not decoder)
    self.blocks = nn.ModuleList(Block(width, num_heads, mlp_dim, decoder) for _ in range(depth))
    self.head_dim = width // num_heads
    self.rope_theta = rope_theta
    self.use_rope = use_rope

  def trunk(self, x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """x [n, in_dim], tile-local coords [n, 5] -> [n, C]."""
    samples = sample_slices(coords[:, 0])
    h = self.input_layer(x) + self.pos_embedder(coords, samples)
    angles = None  # pe_mode 'learned': the table only
    if self.use_rope:  # pe_mode 'joint': the table and 4D RoPE
      angles = rope_angles(coords[:, 1:5], self.head_dim, self.rope_theta)
    for block in self.blocks:
      h = block(h, angles, samples)
    return h


class CrossAttention(nn.Module):
  """MAP-head attention: `to_q` of the probe, `to_kv` (= cat(k, v)) of the tokens, `to_out`."""

  def __init__(self, width: int, num_heads: int):
    super().__init__()
    self.num_heads = num_heads
    self.to_q = nn.Linear(width, width)
    self.to_kv = nn.Linear(width, 2 * width)
    self.to_out = nn.Linear(width, width)

  def forward(self, probe: torch.Tensor, x: torch.Tensor, samples: list[slice]) -> torch.Tensor:
    """probe [C], x [n, C] -> [B, C]: one query per sample over all its tokens, no RoPE."""
    c = x.shape[1]
    d = c // self.num_heads
    q = self.to_q(probe).reshape(1, self.num_heads, d)
    k, v = self.to_kv(x).reshape(x.shape[0], 2, self.num_heads, d).unbind(1)
    out = torch.stack([attention(q, k[s], v[s])[0] for s in samples])  # [B, H, D]
    return self.to_out(out.reshape(len(samples), c))


class AttentionPoolingHead(nn.Module):
  """SigLIP MAP head: a = attn(probe, x); a + mlp(layernorm(a))."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int):
    super().__init__()
    self.probe = nn.Parameter(torch.zeros(width))
    self.attention = CrossAttention(width, num_heads)
    self.layernorm = nn.LayerNorm(width, eps=NORM_EPS)
    self.mlp = FeedForward(width, mlp_dim, bias=True)

  def forward(self, x: torch.Tensor, samples: list[slice]) -> torch.Tensor:
    a = self.attention(self.probe, x, samples)
    return a + self.mlp(self.layernorm(a))


class Encoder(Trunk):
  """Patches -> features after `post_layernorm`; `head` pools them per sample."""

  def __init__(self, trunk, rope_theta: float, use_rope: bool = True):
    super().__init__(PATCH_DIM, trunk.width, trunk.depth, trunk.num_heads, trunk.mlp_dim,
                     decoder=False, rope_theta=rope_theta, use_rope=use_rope)
    self.post_layernorm = nn.LayerNorm(trunk.width, eps=NORM_EPS)
    self.head = AttentionPoolingHead(trunk.width, trunk.num_heads, trunk.mlp_dim)

  def forward(self, x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    return self.post_layernorm(self.trunk(x, coords))


class Decoder(Trunk):
  """Latent -> patches: trunk, `out_norm` (RMSNorm), `out_layer` (no bias)."""

  def __init__(self, trunk, latent_dim: int, rope_theta: float, use_rope: bool = True):
    super().__init__(latent_dim, trunk.width, trunk.depth, trunk.num_heads, trunk.mlp_dim,
                     decoder=True, rope_theta=rope_theta, use_rope=use_rope)
    self.out_norm = RMSNorm(trunk.width)
    self.out_layer = nn.Linear(trunk.width, PATCH_DIM, bias=False)

  def forward(self, z: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    return self.out_layer(self.out_norm(self.trunk(z, coords)))


# --------------------------------------------------------------------------- FSQ


class FSQ:
  """Finite scalar quantisation (spec §2.7); no parameters.

  z [N, G*d] -> codes [N, G*d] in [-1, 1] and indices [N, G] int32, group g = channels
  g*d .. g*d+d-1, first channel of a group least significant.
  """

  def __init__(self, levels, num_codebooks: int, eps: float = 1e-3):
    self.levels = torch.tensor(list(levels), dtype=torch.int32)
    self.num_codebooks = num_codebooks
    self.eps = eps

  def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    levels = self.levels
    zg = z.float().reshape(z.shape[0], self.num_codebooks, len(levels))
    half_l = (levels - 1) * (1 + self.eps) / 2
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)
    shift = torch.atanh(offset / half_l)
    bounded = torch.tanh(zg + shift) * half_l - offset
    half_width = levels // 2
    codes = torch.round(bounded) / half_width  # torch.round: half to even
    basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.int64), levels[:-1].long()]), 0)
    digits = (codes * half_width + half_width).round().long()
    indices = (digits * basis).sum(-1).to(torch.int32)
    return codes.reshape(z.shape), indices


# --------------------------------------------------------------------------- the model


class TorchAToken(nn.Module):
  """ml-atoken's AutoencoderKL (encoder + head + proj + decoder), state-dict compatible.

  Args:
    config: an `atoken_jax.config.ModelConfig` (or anything with its fields: encoder /
      decoder (width, depth, num_heads, mlp_dim), latent_dim, quantizer, fsq_levels,
      fsq_codebooks, rope_theta, use_rope, tile_latent_frames, decoder_kv_cache_frames).
  """

  def __init__(self, config: Any):
    super().__init__()
    if getattr(config, "decoder_kv_cache_frames", 0):
      raise ValueError("TorchAToken implements the release's default decoding without a KV "
                       "cache; decoder_kv_cache_frames must be 0")
    theta = getattr(config, "rope_theta", 10000.0)
    self.tile_frames = getattr(config, "tile_latent_frames", 4)
    rope = getattr(config, "use_rope", True)
    self.encoder = Encoder(config.encoder, theta, rope)
    self.proj = nn.Linear(config.encoder.width, 2 * config.latent_dim, bias=False)
    self.decoder = Decoder(config.decoder, config.latent_dim, theta, rope)
    self.fsq = (FSQ(config.fsq_levels, config.fsq_codebooks)
                if getattr(config, "quantizer", None) == "fsq" else None)

  @classmethod
  def from_state_dict(cls, path_or_dict: str | os.PathLike | Mapping[str, Any],
                      config: Any) -> "TorchAToken":
    """Builds the model and loads a state dict with `strict=True`, as ml-atoken does.

    A path is read like ml-atoken reads it: `.safetensors` with safetensors, anything else
    with `torch.load(weights_only=True)` (no pickled code runs). Tensors are cast to float32.
    """
    state = path_or_dict
    if isinstance(path_or_dict, (str, os.PathLike)):
      state = read_state_dict(path_or_dict)
    state = {k: _as_float_tensor(v) for k, v in state.items()}
    model = cls(config)
    model.load_state_dict(state, strict=True)
    return model.eval()

  def _tiled(self, trunk: Trunk, x: torch.Tensor, coords: torch.Tensor,
             out_dim: int) -> torch.Tensor:
    """Runs `trunk` on each temporal tile and writes its rows back in input order."""
    out = torch.empty(x.shape[0], out_dim, dtype=torch.float32)
    for rows, local in temporal_tiles(coords, self.tile_frames):
      out[rows] = trunk(x[rows], local).float()
    return out

  @torch.no_grad()
  def encode(self, feats: torch.Tensor, coords: torch.Tensor):
    """feats [N, 3072], coords [N, 5] -> (features [N, C], pooled [B, C] (not normalised),
    mean [N, latent], logvar [N, latent]); B = samples present, in batch-id order."""
    feats, coords = _check_inputs(feats, coords, PATCH_DIM)
    features = self._tiled(self.encoder, feats, coords, self.encoder.post_layernorm.weight.numel())
    pooled = self.encoder.head(features, sample_slices(coords[:, 0]))
    mean, logvar = self.proj(features).float().chunk(2, dim=1)
    return features, pooled, mean, logvar

  @torch.no_grad()
  def quantize(self, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FSQ of the posterior mean -> (codes [N, latent], indices [N, codebooks] int32)."""
    if self.fsq is None:
      raise ValueError("this model has no quantizer (config.quantizer is None)")
    return self.fsq.quantize(torch.as_tensor(mean))

  @torch.no_grad()
  def decode(self, latent: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """latent [N, latent_dim], coords [N, 5] -> patches [N, 3072] (pixel space, no clamp)."""
    latent, coords = _check_inputs(latent, coords, self.decoder.input_layer.in_features)
    return self._tiled(self.decoder, latent, coords, PATCH_DIM)


def _check_inputs(x, coords, width: int) -> tuple[torch.Tensor, torch.Tensor]:
  x, coords = torch.as_tensor(x).float(), torch.as_tensor(coords).long()
  if x.ndim != 2 or x.shape[1] != width or coords.shape != (x.shape[0], 5) or not len(x):
    raise ValueError(f"expected x [N >= 1, {width}] and coords [N, 5], got {tuple(x.shape)} "
                     f"and {tuple(coords.shape)}")
  return x, coords


def _as_float_tensor(v) -> torch.Tensor:
  """A torch or numpy (also ml_dtypes bfloat16) array -> a float32 tensor of its own."""
  if isinstance(v, torch.Tensor):
    return v.float()
  return torch.from_numpy(np.array(v, dtype=np.float32))


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
  """`.safetensors` via safetensors, else `torch.load(weights_only=True)`; a flat dict."""
  path = os.fspath(path)
  if path.endswith(".safetensors"):
    from safetensors.torch import load_file  # pylint: disable=import-outside-toplevel
    return load_file(path)
  state = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(state, Mapping):
    raise ValueError(f"{path}: expected a flat name -> tensor mapping, got "
                     f"{type(state).__name__}")
  return dict(state)
