"""A small, independent PyTorch reference of ml-atoken's 3D Gaussian decoder (spec §2.9).

Written from the spec, with the release's state-dict names (`load_state_dict(strict=True)` takes
an exported state dict), so tests can check our JAX network and our exports without ml-atoken,
flash-attn or TRELLIS. Plain loops, no speed: the windowed attention groups the tokens of each
window explicitly in Python and attends within each group, with tanh soft-capping of the scores.
One sample at a time: feats [N, in], coords [N, 3] (x, y, z).
Needs the `torch` extra.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class RMSNorm(nn.Module):
  def __init__(self, c: int, eps: float = 1e-6):
    super().__init__()
    self.eps = eps
    self.weight = nn.Parameter(torch.ones(c))

  def forward(self, x):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class WindowAttention(nn.Module):
  def __init__(self, c: int, heads: int, window: int, shift: int, softcap: float):
    super().__init__()
    self.heads, self.window, self.shift, self.softcap = heads, window, shift, softcap
    self.to_qkv = nn.Linear(c, 3 * c, bias=False)
    self.to_out = nn.Linear(c, c, bias=False)

  def groups(self, coords: torch.Tensor) -> list[list[int]]:
    """Token indices of each non-empty window floor((coord + shift) / window)."""
    out: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(coords.tolist()):
      out.setdefault(tuple((v + self.shift) // self.window for v in c), []).append(i)
    return list(out.values())

  def forward(self, x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    n, c = x.shape
    h = self.heads
    d = c // h
    qkv = self.to_qkv(x).reshape(n, 3, h, d)
    out = torch.zeros(n, h, d, dtype=x.dtype)
    for idx in self.groups(coords):
      idx = torch.tensor(idx)
      q, k, v = (qkv[idx, j].transpose(0, 1) for j in range(3))  # [H, n_w, D]
      s = q @ k.transpose(1, 2) / math.sqrt(d)
      s = self.softcap * torch.tanh(s / self.softcap)
      out[idx] = (s.softmax(-1) @ v).transpose(0, 1)
    return self.to_out(out.reshape(n, c))


class Mlp(nn.Module):
  def __init__(self, c: int, m: int):
    super().__init__()
    self.mlp = nn.Sequential(nn.Linear(c, m, bias=False), nn.GELU(approximate="tanh"),
                             nn.Linear(m, c, bias=False))

  def forward(self, x):
    return self.mlp(x)


class Block(nn.Module):
  def __init__(self, c, heads, mlp, window, shift, softcap, eps):
    super().__init__()
    self.norm1, self.norm2 = RMSNorm(c, eps), RMSNorm(c, eps)
    self.attn = WindowAttention(c, heads, window, shift, softcap)
    self.mlp = Mlp(c, mlp)

  def forward(self, x, coords):
    x = x + self.attn(self.norm1(x), coords)
    return x + self.mlp(self.norm2(x))


def _hammersley(g: int, num: int) -> list[float]:
  def phi(base, n):
    val, f = 0.0, 1.0 / base
    while n:
      val, n, f = val + (n % base) * f, n // base, f / base
    return val
  return [g / num, phi(2, g), phi(3, g)]


class GaussianDecoder(nn.Module):
  """Keys: offset_perturbation, input_layer.weight, blocks.{i}.(norm1|norm2|attn.to_qkv|
  attn.to_out|mlp.mlp.0|mlp.mlp.2).weight, out_layer.weight/.bias (76 for the release)."""

  def __init__(self, width=768, depth=12, heads=12, mlp=3072, in_dim=768, window=8, softcap=30.0,
               num_gaussians=32, resolution=64, voxel_size=1.5, lr=None, scaling_bias=4e-3,
               opacity_bias=0.1, min_kernel_size=9e-4, norm_eps=1e-6):
    super().__init__()
    self.width, self.res, self.g, self.vs = width, resolution, num_gaussians, voxel_size
    self.lr = {**dict(xyz=1.0, features_dc=1.0, scaling=1.0, rotation=0.1, opacity=1.0),
               **(lr or {})}
    self.scaling_bias, self.opacity_bias, self.min_kernel = scaling_bias, opacity_bias, \
        min_kernel_size
    self.input_layer = nn.Linear(in_dim, width, bias=False)
    self.blocks = nn.ModuleList(
        Block(width, heads, mlp, window, window // 2 * (i % 2), softcap, norm_eps)
        for i in range(depth))
    self.out_layer = nn.Linear(width, 14 * num_gaussians, bias=True)
    pert = torch.tensor([_hammersley(g, num_gaussians) for g in range(num_gaussians)]).float()
    self.register_buffer("offset_perturbation", torch.atanh((pert * 2 - 1) / voxel_size))

  @classmethod
  def from_config(cls, cfg) -> "GaussianDecoder":
    """From an `atoken_jax.config.GaussianDecoderConfig`."""
    return cls(cfg.width, cfg.depth, cfg.num_heads, cfg.mlp_dim, cfg.in_dim, cfg.window,
               cfg.softcap, cfg.num_gaussians, cfg.resolution, cfg.voxel_size,
               dict(xyz=cfg.lr_xyz, features_dc=cfg.lr_features_dc, scaling=cfg.lr_scaling,
                    rotation=cfg.lr_rotation, opacity=cfg.lr_opacity),
               cfg.scaling_bias, cfg.opacity_bias, cfg.min_kernel_size, cfg.norm_eps)

  def ape(self, coords: torch.Tensor) -> torch.Tensor:
    fd = self.width // 3 // 2
    freqs = 1.0 / 10000 ** (torch.arange(fd, dtype=torch.float32) / fd)
    ang = torch.outer(coords.reshape(-1).float(), freqs)
    emb = torch.cat([ang.sin(), ang.cos()], -1).reshape(coords.shape[0], -1)
    return F.pad(emb, (0, self.width - emb.shape[1]))

  def raw(self, feats: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """feats [N, in], coords [N, 3] int -> [N, 14 G]."""
    x = self.input_layer(feats) + self.ape(coords)
    for blk in self.blocks:
      x = blk(x, coords)
    return self.out_layer(F.layer_norm(x, x.shape[-1:]))

  def forward(self, feats: torch.Tensor, coords: torch.Tensor) -> dict[str, torch.Tensor]:
    """-> xyz [M, 3] world, scale [M, 3], rotation [M, 4] wxyz, opacity [M], sh_dc [M, 3]."""
    raw, g, n = self.raw(feats, coords), self.g, coords.shape[0]
    parts, start = {}, 0
    for name, k in (("xyz", 3), ("features_dc", 3), ("scaling", 3), ("rotation", 4),
                    ("opacity", 1)):
      parts[name] = raw[:, start:start + g * k].reshape(n, g, k) * self.lr[name]
      start += g * k
    centre = (coords.float() + 0.5) / self.res
    off = torch.tanh(parts["xyz"] + self.offset_perturbation) / self.res * 0.5 * self.vs
    xyz = (centre[:, None] + off).reshape(-1, 3) - 0.5
    sb = torch.tensor(self.scaling_bias)
    sb = sb + torch.log(-torch.expm1(-sb))
    scale = torch.sqrt(F.softplus(parts["scaling"] + sb).square() + self.min_kernel ** 2)
    ob = torch.tensor(self.opacity_bias)
    opacity = torch.sigmoid(parts["opacity"] + torch.log(ob / (1 - ob)))
    rot = F.normalize(parts["rotation"] + torch.tensor([1.0, 0.0, 0.0, 0.0]), dim=-1)
    return dict(xyz=xyz, scale=scale.reshape(-1, 3), rotation=rot.reshape(-1, 4),
                opacity=opacity.reshape(-1), sh_dc=parts["features_dc"].reshape(-1, 3))
