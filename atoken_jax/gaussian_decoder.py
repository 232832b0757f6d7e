"""User-level 3D Gaussian decoder: voxel features -> activated 3D Gaussians.

  gdec = GaussianDecoder.from_ml_atoken("3d_decode_gs.safetensors", "3d_decode_gs.yaml")
  g = gdec(voxel_feats768, coords_xyz)   # [N, 768] in [-1, 1], [N, 3] ints in [0, 64)
  g.xyz [M, 3] world, g.scale [M, 3], g.rotation [M, 4] unit wxyz, g.opacity [M], g.sh_dc [M, 3]
  with M = 32 N, voxel-major (row = n * 32 + k).
  gdec.raw(voxel_feats768, coords_xyz)   # [N, 448] network output before the activations
  gdec.export_ml_atoken("out.safetensors", yaml_path="out.yaml")

One sample per call. Inputs are checked on the host (clear ValueError) before anything compiles;
N is padded to a multiple of `bucket` voxels so each bucket compiles once. From
`packed_min_voxels` (padded) voxels, attention runs on host-packed windows (O(N) work) instead of
the masked O(N^2) path; both are exact.
"""
from __future__ import annotations

import os
from typing import Any, Literal

import jax
import ml_dtypes
import numpy as np

from atoken_jax import config as config_lib
from atoken_jax.interop import checkpoint_io, ml_atoken_gs
from atoken_jax.model import gaussian_decoder as net_lib
from atoken_jax.model import gaussians
from atoken_jax.model.gaussians import Gaussians

AttentionMode = Literal["auto", "masked", "packed"]


class GaussianDecoder:
  """A Gaussian decoder's config and float32 weights, with jitted forward passes.

  Attributes:
    cfg: `GaussianDecoderConfig`; params / constants: the Flax variable collections (numpy).
    bucket: pad N up to a multiple of this; attention: "auto" (packed from
      `packed_min_voxels` padded voxels), "masked" or "packed".
  """

  def __init__(self, cfg: config_lib.GaussianDecoderConfig, params: dict, constants: dict, *,
               bucket: int = 256, attention: AttentionMode = "auto",
               packed_min_voxels: int = 2048):
    if attention not in ("auto", "masked", "packed"):
      raise ValueError(f"attention must be 'auto', 'masked' or 'packed', got {attention!r}")
    self.cfg, self.bucket = cfg, int(bucket)
    self.attention, self.packed_min_voxels = attention, packed_min_voxels
    self.params, self.constants = params, constants
    self.net = net_lib.GaussianDecoderNet(cfg)

    def forward(variables, feats, coords, valid, layout):
      raw = self.net.apply(variables, feats, coords, valid, layout=layout)
      pert = variables["constants"]["offset_perturbation"]
      return raw, gaussians.activate(raw, coords, cfg, pert)
    self._forward = jax.jit(forward)  # one compile per (bucket, path) serves raw() and __call__

  # -- construction ---------------------------------------------------------------------------

  @classmethod
  def init_random(cls, preset: str = "tiny", seed: int = 0, **kw) -> "GaussianDecoder":
    """Fresh weights as the release's training code initialises them (out_layer zero).
    `kw`: config overrides, or `bucket` / `attention` / `packed_min_voxels`."""
    opts = {k: kw.pop(k) for k in ("bucket", "attention", "packed_min_voxels") if k in kw}
    cfg = config_lib.gaussian_decoder_config(preset, **kw)
    variables = net_lib.init_variables(cfg, jax.random.PRNGKey(seed))
    variables = jax.tree.map(np.asarray, variables)
    return cls(cfg, variables["params"], variables["constants"], **opts)

  @classmethod
  def from_ml_atoken(cls, weights: str | os.PathLike, yaml: str | os.PathLike | None = None,
                     **kw) -> "GaussianDecoder":
    """ml-atoken `3d_decode_gs` weights (.safetensors, or .pt read weights-only) and its yaml
    (default: the released configuration). `lpips_loss.*` tensors are ignored."""
    opts = {k: kw.pop(k) for k in ("bucket", "attention", "packed_min_voxels") if k in kw}
    cfg = (ml_atoken_gs.config_from_yaml(yaml, **kw) if yaml is not None else
           config_lib.gaussian_decoder_config("so400m", **kw))
    state = checkpoint_io.load_state_dict(weights)
    params, constants = ml_atoken_gs.from_state_dict(state, cfg, os.fspath(weights))
    return cls(cfg, params, constants, **opts)

  # -- export ---------------------------------------------------------------------------------

  def state_dict(self) -> dict[str, np.ndarray]:
    """The ml-atoken state dict (76 tensors for the release), float32 numpy."""
    sd = ml_atoken_gs.to_state_dict(self.params, self.constants, self.cfg)
    return {k: np.array(v, np.float32) for k, v in sd.items()}  # writable copies

  def export_ml_atoken(self, path: str | os.PathLike,
                       yaml_path: str | os.PathLike | None = None) -> None:
    """Writes the state dict (.safetensors or .pt) and, if asked, the yaml (released layout)."""
    checkpoint_io.save_state_dict(self.state_dict(), path)
    if yaml_path is not None:
      ml_atoken_gs.save_yaml(self.cfg, yaml_path)

  # -- forward --------------------------------------------------------------------------------

  @property
  def variables(self) -> dict[str, Any]:
    return {"params": self.params, "constants": self.constants}

  def raw(self, feats, coords) -> jax.Array:
    """feats [N, in_dim], coords [N, 3] -> raw network output [N, 14 G] (float32)."""
    args, n = self._prepare(feats, coords)
    return self._forward(self.variables, *args)[0][0, :n]

  def __call__(self, feats, coords) -> Gaussians:
    """feats [N, in_dim], coords [N, 3] -> activated `Gaussians` with M = N * G rows."""
    args, n = self._prepare(feats, coords)
    g = self._forward(self.variables, *args)[1]
    m = n * self.cfg.num_gaussians
    return Gaussians(*(x[0, :m] for x in g))

  def _prepare(self, feats, coords):
    feats, coords = validate_inputs(feats, coords, self.cfg)
    n = feats.shape[0]
    n_pad = -(-n // self.bucket) * self.bucket
    f = np.zeros((1, n_pad, self.cfg.in_dim), np.float32)
    c = np.zeros((1, n_pad, 3), np.int32)
    m = np.zeros((1, n_pad), bool)
    f[0, :n], c[0, :n], m[0, :n] = feats, coords, True
    packed = self.attention == "packed" or (
        self.attention == "auto" and n_pad >= self.packed_min_voxels)
    layout = net_lib.window_layout(c, m, self.cfg) if packed else None
    return (f, c, m, layout), n


def validate_inputs(feats, coords, cfg: config_lib.GaussianDecoderConfig
                    ) -> tuple[np.ndarray, np.ndarray]:
  """-> float32 feats [N, in_dim], int32 coords [N, 3]; ValueError on anything else."""
  feats, coords = np.asarray(feats), np.asarray(coords)
  for name, a in (("voxel features", feats), ("coords", coords)):
    if a.dtype != ml_dtypes.bfloat16 and (a.dtype.kind not in "fiu"):
      raise ValueError(f"{name} must be a real numeric array, got dtype {a.dtype}")
  if feats.ndim != 2 or feats.shape[1] != cfg.in_dim:
    raise ValueError(f"voxel features must have shape [N, {cfg.in_dim}], got {feats.shape}")
  if coords.ndim != 2 or coords.shape[1] != 3:
    raise ValueError(f"coords must have shape [N, 3] (x, y, z), got {coords.shape}")
  if feats.shape[0] != coords.shape[0]:
    raise ValueError(f"{feats.shape[0]} voxel feature rows but {coords.shape[0]} coords")
  if feats.shape[0] == 0:
    raise ValueError("no voxels: voxel features and coords are empty")
  feats = feats.astype(np.float32)
  if not np.isfinite(feats).all():
    raise ValueError("voxel features contain NaN or Inf")
  if coords.dtype.kind == "f" or coords.dtype == ml_dtypes.bfloat16:
    cf = coords.astype(np.float64)
    if not np.isfinite(cf).all() or (cf != np.round(cf)).any():
      raise ValueError("coords must be integers (got non-integral or non-finite values)")
    coords = cf
  lo, hi = coords.min(), coords.max()
  if lo < 0 or hi >= cfg.resolution:
    raise ValueError(f"coords must lie in [0, {cfg.resolution}), got values in [{lo}, {hi}]")
  return feats, coords.astype(np.int32)
