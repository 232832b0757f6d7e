"""ml-atoken's 3D Gaussian decoder (`decoder_gs.SLatGaussianDecoder`) <-> our parameters.

State dict (spec §3.3; flat, no prefix; torch Linear weights are [out, in]):
  offset_perturbation [G, 3]        <- constants/offset_perturbation
  input_layer.weight [C, in]        <- input_layer/kernel [in, C]
  blocks.{i}.norm1.weight [C]       <- blocks_{i}/norm1/scale           (norm2 likewise)
  blocks.{i}.attn.to_qkv.weight     <- blocks_{i}/attn/qkv/kernel [C, 3, H, D]  (rows q|k|v, h, d)
  blocks.{i}.attn.to_out.weight     <- blocks_{i}/attn/out/kernel [H, D, C]
  blocks.{i}.mlp.mlp.0.weight       <- blocks_{i}/mlp/fc1/kernel        (mlp.mlp.2 <- fc2)
  out_layer.weight [14G, C] / .bias <- out_layer/kernel / bias
The training subclass's `lpips_loss.*` tensors are ignored on import and never written.
The mapping functions take jax or numpy arrays and work under `jax.eval_shape`.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from atoken_jax import config as config_lib
from atoken_jax.interop import checkpoint_io

IGNORED_PREFIXES = ("lpips_loss.",)


def expected_shapes(cfg: config_lib.GaussianDecoderConfig) -> dict[str, tuple[int, ...]]:
  c, m = cfg.width, cfg.mlp_dim
  out = {"offset_perturbation": (cfg.num_gaussians, 3), "input_layer.weight": (c, cfg.in_dim),
         "out_layer.weight": (cfg.out_dim, c), "out_layer.bias": (cfg.out_dim,)}
  for i in range(cfg.depth):
    p = f"blocks.{i}."
    out.update({p + "norm1.weight": (c,), p + "norm2.weight": (c,),
                p + "attn.to_qkv.weight": (3 * c, c), p + "attn.to_out.weight": (c, c),
                p + "mlp.mlp.0.weight": (m, c), p + "mlp.mlp.2.weight": (c, m)})
  return out


def to_state_dict(params: Mapping[str, Any], constants: Mapping[str, Any],
                  cfg: config_lib.GaussianDecoderConfig) -> dict[str, Any]:
  """Our (unboxed) params and constants -> ml-atoken names and layouts (jax arrays)."""
  c = cfg.width
  sd = {"offset_perturbation": jnp.asarray(constants["offset_perturbation"]),
        "input_layer.weight": jnp.asarray(params["input_layer"]["kernel"]).T,
        "out_layer.weight": jnp.asarray(params["out_layer"]["kernel"]).T,
        "out_layer.bias": jnp.asarray(params["out_layer"]["bias"])}
  for i in range(cfg.depth):
    b, p = params[f"blocks_{i}"], f"blocks.{i}."
    sd[p + "norm1.weight"] = jnp.asarray(b["norm1"]["scale"])
    sd[p + "norm2.weight"] = jnp.asarray(b["norm2"]["scale"])
    sd[p + "attn.to_qkv.weight"] = jnp.asarray(b["attn"]["qkv"]["kernel"]).reshape(c, 3 * c).T
    sd[p + "attn.to_out.weight"] = jnp.asarray(b["attn"]["out"]["kernel"]).reshape(c, c).T
    sd[p + "mlp.mlp.0.weight"] = jnp.asarray(b["mlp"]["fc1"]["kernel"]).T
    sd[p + "mlp.mlp.2.weight"] = jnp.asarray(b["mlp"]["fc2"]["kernel"]).T
  return sd


def from_state_dict(state: Mapping[str, Any], cfg: config_lib.GaussianDecoderConfig,
                    source: str = "state dict") -> tuple[dict, dict]:
  """ml-atoken state dict -> (params, constants) as float32 numpy trees.

  Checks the key set and shapes first (one ValueError naming every problem); `lpips_loss.*`
  keys are ignored.
  """
  checkpoint_io.check_keys(expected_shapes(cfg), state, source, IGNORED_PREFIXES)
  f32 = lambda k: np.asarray(state[k]).astype(np.float32)
  c, h, d = cfg.width, cfg.num_heads, cfg.head_dim
  params = {"input_layer": {"kernel": f32("input_layer.weight").T},
            "out_layer": {"kernel": f32("out_layer.weight").T, "bias": f32("out_layer.bias")}}
  for i in range(cfg.depth):
    p = f"blocks.{i}."
    params[f"blocks_{i}"] = {
        "norm1": {"scale": f32(p + "norm1.weight")},
        "norm2": {"scale": f32(p + "norm2.weight")},
        "attn": {"qkv": {"kernel": f32(p + "attn.to_qkv.weight").T.reshape(c, 3, h, d)},
                 "out": {"kernel": f32(p + "attn.to_out.weight").T.reshape(h, d, c)}},
        "mlp": {"fc1": {"kernel": f32(p + "mlp.mlp.0.weight").T},
                "fc2": {"kernel": f32(p + "mlp.mlp.2.weight").T}}}
  params = _contiguous(params)
  return params, {"offset_perturbation": f32("offset_perturbation")}


def _contiguous(tree):
  if isinstance(tree, dict):
    return {k: _contiguous(v) for k, v in tree.items()}
  return np.ascontiguousarray(tree)


# ---------------------------------------------------------------------------------------------
# YAML (the released `3d_decode_gs.yaml` layout)

_CLASS_NAME = "models.pretrained.decoder_gs.SLatGaussianDecoderTrain"


def config_from_yaml(src: str | os.PathLike | Mapping[str, Any],
                     **overrides) -> config_lib.GaussianDecoderConfig:
  """`3d_decode_gs.yaml` (path or parsed mapping) -> GaussianDecoderConfig.

  Raises ValueError for settings this implementation does not reproduce (attention other than
  'swin', position embedding other than 'ape', qk-norm, no offset perturbation, scaling
  activation other than softplus, SH degree > 0).
  """
  y = dict(src) if isinstance(src, Mapping) else checkpoint_io.load_yaml(src)
  where = "Gaussian decoder yaml" if isinstance(src, Mapping) else os.fspath(src)
  m = y.get("model")
  if not isinstance(m, Mapping):
    raise ValueError(f"{where}: expected a top-level 'model' mapping")
  rep = m.get("representation_config") or {}
  unsupported = []
  if m.get("attn_mode", "swin") != "swin":
    unsupported.append(f"attn_mode={m['attn_mode']!r} (only 'swin')")
  if m.get("pe_mode", "ape") != "ape":
    unsupported.append(f"pe_mode={m['pe_mode']!r} (only 'ape')")
  if m.get("qk_rms_norm", False):
    unsupported.append("qk_rms_norm=True")
  if not rep.get("perturb_offset", True):
    unsupported.append("perturb_offset=False")
  if rep.get("scaling_activation", "softplus") != "softplus":
    unsupported.append(f"scaling_activation={rep['scaling_activation']!r} (only 'softplus')")
  if unsupported:
    raise ValueError(f"{where}: unsupported Gaussian decoder settings: " + ", ".join(unsupported))
  try:
    width = int(m["model_channels"])
    heads = m.get("num_heads") or width // int(m.get("num_head_channels", 64))
    lr = rep.get("lr", {})
    kw = dict(width=width, depth=int(m["num_blocks"]), num_heads=int(heads),
              mlp_dim=int(m.get("mlp_channels", 3072)), in_dim=int(m["latent_channels"]),
              window=int(m.get("window_size", 8)), resolution=int(m["resolution"]))
  except KeyError as e:
    raise ValueError(f"{where}: missing model.{e.args[0]}") from None
  opt = dict(voxel_size="voxel_size", num_gaussians="num_gaussians",
             min_kernel_size="3d_filter_kernel_size", scaling_bias="scaling_bias",
             opacity_bias="opacity_bias")
  kw.update({ours: type(getattr(config_lib.GaussianDecoderConfig, ours))(rep[theirs])
             for ours, theirs in opt.items() if theirs in rep})
  kw.update({f"lr{k}": float(v) for k, v in lr.items()
             if k in ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity")})
  kw.update(overrides)
  cfg = config_lib.GaussianDecoderConfig(**kw)
  if cfg.width % cfg.num_heads:
    raise ValueError(f"{where}: model_channels {cfg.width} not divisible by num_heads "
                     f"{cfg.num_heads}")
  return cfg


def yaml_from_config(cfg: config_lib.GaussianDecoderConfig) -> dict[str, Any]:
  """GaussianDecoderConfig -> a mapping in the released `3d_decode_gs.yaml` layout."""
  return {"model": {
      "class_name": _CLASS_NAME, "resolution": cfg.resolution, "model_channels": cfg.width,
      "latent_channels": cfg.in_dim, "num_blocks": cfg.depth, "num_heads": cfg.num_heads,
      "mlp_channels": cfg.mlp_dim, "attn_mode": "swin", "window_size": cfg.window,
      "representation_config": {
          "lr": {"_xyz": cfg.lr_xyz, "_features_dc": cfg.lr_features_dc,
                 "_opacity": cfg.lr_opacity, "_scaling": cfg.lr_scaling,
                 "_rotation": cfg.lr_rotation},
          "perturb_offset": True, "voxel_size": cfg.voxel_size,
          "num_gaussians": cfg.num_gaussians, "2d_filter_kernel_size": 0.1,
          "3d_filter_kernel_size": cfg.min_kernel_size, "scaling_bias": cfg.scaling_bias,
          "opacity_bias": cfg.opacity_bias, "scaling_activation": "softplus"}}}


def save_yaml(cfg: config_lib.GaussianDecoderConfig, path: str | os.PathLike) -> None:
  import yaml  # pylint: disable=import-outside-toplevel
  with open(path, "w") as f:
    yaml.safe_dump(yaml_from_config(cfg), f, sort_keys=False)
