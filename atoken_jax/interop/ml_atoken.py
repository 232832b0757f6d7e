"""Apple ml-atoken names for the AToken autoencoder: state dicts and YAML configs (spec §3).

The only module that knows ml-atoken's parameter names. A checkpoint there is a flat
`nn.Module` state dict (no prefix, no wrapper) of the `AutoencoderKL` built from the YAML's
`model.model_cfg.arch_cfg`; its Linear weights are [out, in]. Our parameter tree differs in:

  ours (flax)                                    ml-atoken (torch)
  <trunk>/transformer/blocks_{i}/attn/qkv        <trunk>.blocks.{i}.attn.to_qkv      [3C, C]
      kernel [C, 3, H, D]                            rows q | k | v, each head-major
  .../attn/out/kernel [H, D, C]                  .../attn.to_out.weight            [C, C]
  .../attn/{q,k}_norm/scale [H, D]               .../attn.{q,k}_rms_norm.gamma      [H, D]
  .../mlp/fc1, fc2                               .../mlp.mlp.0, .../mlp.mlp.2
  .../norm1/scale (LayerNorm or RMSNorm)         .../norm1.weight
  encoder/pos_embedder/embedding [256, C]        encoder.pos_embedder.position_embedding.weight
  head/{probe,query,key_value,out,layernorm,mlp} encoder.head.{probe, attention.to_q,
                                                   attention.to_kv (= cat(k, v)),
                                                   attention.to_out, layernorm, mlp.mlp.0/2}
  proj/kernel [C, 2*latent]                      proj.weight [2*latent, C]

With `scan_layers` the blocks of a trunk are stacked under `<trunk>/transformer/blocks/...` with
a leading layer axis; both layouts are read and written. FSQ and RoPE have no parameters.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Optional

import numpy as np

from atoken_jax import config as config_lib
from atoken_jax.interop import checkpoint_io

Path = tuple[str, ...]
StateDict = dict[str, np.ndarray]


# --------------------------------------------------------------------------- name table


@dataclasses.dataclass(frozen=True)
class TensorName:
  """One ml-atoken tensor and the parameter it holds.

  Attributes:
    key: ml-atoken state-dict name, e.g. "encoder.blocks.3.attn.to_qkv.weight".
    path: our parameter path, e.g. ("encoder", "transformer", "blocks_3", "attn", "qkv",
      "kernel"); for a block tensor of a scanned trunk the block's layer lives in `layer`.
    shape: our shape of the parameter (one layer's shape for block tensors).
    torch_shape: ml-atoken's shape.
    in_dims: > 0 for a kernel whose first `in_dims` axes are its inputs: ml-atoken stores it
      flattened and transposed, [prod(outputs), prod(inputs)]. 0: a plain reshape.
    trunk / layer / block_path: for block tensors, the trunk ("encoder"/"decoder"), the block
      index and the path inside one block; None / -1 / () otherwise.
  """
  key: str
  path: Path
  shape: tuple[int, ...]
  torch_shape: tuple[int, ...]
  in_dims: int = 0
  trunk: Optional[str] = None
  layer: int = -1
  block_path: Path = ()

  def to_torch(self, a: np.ndarray) -> np.ndarray:
    """Our array (shape `shape`) -> ml-atoken's layout (shape `torch_shape`)."""
    a = np.asarray(a)
    if self.in_dims:
      n_in = math.prod(self.shape[:self.in_dims])
      a = a.reshape(n_in, -1).T
    return np.ascontiguousarray(a.reshape(self.torch_shape))

  def from_torch(self, t: np.ndarray) -> np.ndarray:
    """ml-atoken's array (shape `torch_shape`) -> our layout (shape `shape`)."""
    t = np.asarray(t)
    if self.in_dims:
      t = t.T
    return np.ascontiguousarray(t.reshape(self.shape))


def _linear(key: str, path: Path, in_shape: tuple, out_shape: tuple, bias: bool,
            **block) -> list[TensorName]:
  """A torch Linear `key` = our DenseGeneral at `path` with kernel [*in_shape, *out_shape]."""
  n_in, n_out = math.prod(in_shape), math.prod(out_shape)
  names = [TensorName(f"{key}.weight", path + ("kernel",), tuple(in_shape) + tuple(out_shape),
                      (n_out, n_in), in_dims=len(in_shape), **_sub(block, "kernel"))]
  if bias:
    names.append(TensorName(f"{key}.bias", path + ("bias",), tuple(out_shape), (n_out,),
                            **_sub(block, "bias")))
  return names


def _norm(key: str, path: Path, width: int, bias: bool, **block) -> list[TensorName]:
  """LayerNorm (weight, bias) or RMSNorm (weight) `key` = our norm with `scale` [, `bias`]."""
  names = [TensorName(f"{key}.weight", path + ("scale",), (width,), (width,),
                      **_sub(block, "scale"))]
  if bias:
    names.append(TensorName(f"{key}.bias", path + ("bias",), (width,), (width,),
                            **_sub(block, "bias")))
  return names


def _sub(block: dict, leaf: str) -> dict:
  """Extends a block tensor's `block_path` by the leaf name."""
  if not block:
    return {}
  return {**block, "block_path": block["block_path"] + (leaf,)}


def _block_names(trunk_name: str, trunk: config_lib.TrunkConfig, layer: int,
                 decoder: bool) -> list[TensorName]:
  """The 12 (encoder) or 8 (decoder) tensors of block `layer`, our unscanned paths."""
  c, h, d, m = trunk.width, trunk.num_heads, trunk.head_dim, trunk.mlp_dim
  bias = not decoder
  key = f"{trunk_name}.blocks.{layer}"
  path = (trunk_name, "transformer", f"blocks_{layer}")

  def at(*rel):
    return path + rel, dict(trunk=trunk_name, layer=layer, block_path=rel)

  names = []
  for norm in ("norm1", "norm2"):
    p, blk = at(norm)
    names += _norm(f"{key}.{norm}", p, c, bias, **blk)
  p, blk = at("attn", "qkv")
  names += _linear(f"{key}.attn.to_qkv", p, (c,), (3, h, d), bias, **blk)
  if decoder:
    for ours, theirs in (("q_norm", "q_rms_norm"), ("k_norm", "k_rms_norm")):
      p, blk = at("attn", ours, "scale")
      names.append(TensorName(f"{key}.attn.{theirs}.gamma", p, (h, d), (h, d), **blk))
  p, blk = at("attn", "out")
  names += _linear(f"{key}.attn.to_out", p, (h, d), (c,), bias, **blk)
  p, blk = at("mlp", "fc1")
  names += _linear(f"{key}.mlp.mlp.0", p, (c,), (m,), bias, **blk)
  p, blk = at("mlp", "fc2")
  names += _linear(f"{key}.mlp.mlp.2", p, (m,), (c,), bias, **blk)
  return names


def _pos_table(trunk_name: str, width: int) -> TensorName:
  g = config_lib.POS_GRID * config_lib.POS_GRID
  return TensorName(f"{trunk_name}.pos_embedder.position_embedding.weight",
                    (trunk_name, "pos_embedder", "embedding"), (g, width), (g, width))


def _head_names(enc: config_lib.TrunkConfig) -> list[TensorName]:
  """The SigLIP attention-pooling head `encoder.head.*` = our top-level `head/*`."""
  c, h, d, m = enc.width, enc.num_heads, enc.head_dim, enc.mlp_dim
  names = [TensorName("encoder.head.probe", ("head", "probe"), (c,), (c,))]
  names += _linear("encoder.head.attention.to_q", ("head", "query"), (c,), (h, d), True)
  names += _linear("encoder.head.attention.to_kv", ("head", "key_value"), (c,), (2, h, d), True)
  names += _linear("encoder.head.attention.to_out", ("head", "out"), (h, d), (c,), True)
  names += _norm("encoder.head.layernorm", ("head", "layernorm"), c, True)
  names += _linear("encoder.head.mlp.mlp.0", ("head", "mlp", "fc1"), (c,), (m,), True)
  names += _linear("encoder.head.mlp.mlp.2", ("head", "mlp", "fc2"), (m,), (c,), True)
  return names


def tensor_names(cfg: config_lib.ModelConfig) -> list[TensorName]:
  """Every ml-atoken tensor of the autoencoder for `cfg`, in ml-atoken's module order."""
  enc, dec = cfg.encoder, cfg.decoder
  names = [_pos_table("encoder", enc.width)]
  names += _linear("encoder.input_layer", ("encoder", "input_layer"),
                   (config_lib.PATCH_DIM,), (enc.width,), True)
  for i in range(enc.depth):
    names += _block_names("encoder", enc, i, decoder=False)
  names += _norm("encoder.post_layernorm", ("encoder", "post_layernorm"), enc.width, True)
  names += _head_names(enc)
  names += _linear("proj", ("proj",), (enc.width,), (2 * cfg.latent_dim,), False)
  names.append(_pos_table("decoder", dec.width))
  names += _linear("decoder.input_layer", ("decoder", "input_layer"), (cfg.latent_dim,),
                   (dec.width,), False)
  for i in range(dec.depth):
    names += _block_names("decoder", dec, i, decoder=True)
  names += _norm("decoder.out_norm", ("decoder", "out_norm"), dec.width, False)
  names += _linear("decoder.out_layer", ("decoder", "out_layer"), (dec.width,),
                   (config_lib.PATCH_DIM,), False)
  return names


def expected_shapes(cfg: config_lib.ModelConfig) -> dict[str, tuple[int, ...]]:
  """ml-atoken key -> shape for `cfg` (So/C: 563 tensors, 845,738,048 values)."""
  return {n.key: n.torch_shape for n in tensor_names(cfg)}


def random_state_dict(cfg: config_lib.ModelConfig, seed: int = 0) -> StateDict:
  """Random float32 ml-atoken weights for `cfg` (tests, benchmarks): every tensor non-trivial.

  Linear weights ~ N(0, 1/fan_in); norm weights and qk-norm gammas ~ 1 + N(0, 0.2^2); biases
  ~ N(0, 0.2^2); position tables ~ N(0, 0.5^2); the probe ~ N(0, 1).
  """
  rng = np.random.default_rng(seed)
  state = {}
  for name in tensor_names(cfg):
    shape, leaf = name.torch_shape, name.path[-1]
    if leaf == "scale":
      a = 1 + 0.2 * rng.standard_normal(shape)
    elif leaf == "bias":
      a = 0.2 * rng.standard_normal(shape)
    elif leaf in ("embedding", "probe"):
      a = (0.5 if leaf == "embedding" else 1.0) * rng.standard_normal(shape)
    else:
      a = rng.standard_normal(shape) / math.sqrt(shape[-1])
    state[name.key] = a.astype(np.float32)
  return state


# --------------------------------------------------------------------------- parameter trees


def _plain_tree(params: Any) -> dict:
  """Unboxes (nn.Partitioned / LogicallyPartitioned), unfreezes, drops a {'params': ...} wrap."""
  import flax  # pylint: disable=import-outside-toplevel
  params = flax.core.unfreeze(flax.core.meta.unbox(params))
  if isinstance(params, dict) and set(params) == {"params"}:
    params = params["params"]
  if not isinstance(params, dict):
    raise ValueError(f"expected a parameter tree (nested dict), got {type(params).__name__}")
  return params


def _flatten(tree: dict, prefix: Path = ()) -> dict[Path, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def _is_scanned(params: dict, trunk: str) -> bool:
  """True when `trunk`'s blocks are stacked under `transformer/blocks` (nn.scan)."""
  blocks = params.get(trunk, {}).get("transformer", {})
  if "blocks" in blocks:
    return True
  if "blocks_0" in blocks:
    return False
  raise ValueError(f"parameter tree has neither {trunk}/transformer/blocks (scanned) nor "
                   f"{trunk}/transformer/blocks_0 (per layer)")


def _our_path(name: TensorName, scanned: dict[str, bool]) -> Path:
  if name.trunk is not None and scanned[name.trunk]:
    return (name.trunk, "transformer", "blocks") + name.block_path
  return name.path


def params_to_state_dict(params: Any, cfg: config_lib.ModelConfig,
                         dtype: Any = None) -> StateDict:
  """Our parameters -> an ml-atoken state dict (numpy, C-contiguous).

  Args:
    params: the model's parameter tree (or {'params': tree}), per-layer or scanned, boxed
      (nn.Partitioned / LogicallyPartitioned) or plain; jax or numpy arrays.
    cfg: the model config the parameters belong to.
    dtype: cast every tensor to this dtype (e.g. jnp.bfloat16); None keeps the parameters'.

  Returns:
    {ml-atoken key: array of ml-atoken shape}, loadable with `load_state_dict(strict=True)`.

  Raises:
    ValueError naming any missing, mis-shaped, or unused parameter.
  """
  params = _plain_tree(params)
  scanned = {t: _is_scanned(params, t) for t in ("encoder", "decoder")}
  flat = _flatten(params)
  used: set[Path] = set()
  state: StateDict = {}
  problems = []
  for name in tensor_names(cfg):
    path = _our_path(name, scanned)
    if path not in flat:
      problems.append(f"missing parameter {'/'.join(path)} (for {name.key})")
      continue
    used.add(path)
    if not isinstance(flat[path], np.ndarray):  # device -> host once, not once per layer
      flat[path] = np.asarray(flat[path])
    a = flat[path]
    stacked = name.trunk is not None and scanned[name.trunk]
    want = ((getattr(cfg, name.trunk).depth,) if stacked else ()) + name.shape
    if a.shape != want:
      problems.append(f"parameter {'/'.join(path)} has shape {a.shape}, expected {want}")
      continue
    if stacked:
      a = a[name.layer]
    if dtype is not None:
      a = a.astype(dtype)
    state[name.key] = name.to_torch(a)
  unused = sorted("/".join(p) for p in set(flat) - used)
  if unused:
    problems.append(f"parameters with no ml-atoken name ({len(unused)}): "
                    + ", ".join(unused[:20]))
  if problems:
    raise ValueError("cannot export the parameters to ml-atoken names:\n  "
                     + "\n  ".join(problems[:40]))
  return state


def state_dict_to_params(state: Mapping[str, np.ndarray], cfg: config_lib.ModelConfig,
                         scan_layers: Optional[bool] = None,
                         source: str = "ml-atoken state dict") -> dict:
  """An ml-atoken state dict -> our parameter tree (plain numpy arrays, cfg.param_dtype).

  Args:
    state: {key: array} as read by `checkpoint_io.load_state_dict`.
    cfg: the model config (e.g. from `config_from_ml_atoken_yaml`).
    scan_layers: layout of the blocks; None = cfg.scan_layers.
    source: what `state` is, for error messages (e.g. the file name).

  Raises:
    ValueError naming every missing, unexpected and mis-shaped key (nothing is ignored).
  """
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  checkpoint_io.check_keys(expected_shapes(cfg), state, source)
  scan = cfg.scan_layers if scan_layers is None else bool(scan_layers)
  dtype = jnp.dtype(cfg.param_dtype)
  tree: dict = {}
  stacks: dict[Path, list] = {}
  for name in tensor_names(cfg):
    a = name.from_torch(state[name.key]).astype(dtype, copy=False)
    if scan and name.trunk is not None:
      stacks.setdefault((name.trunk, "transformer", "blocks") + name.block_path, []).append(a)
    else:
      _set(tree, name.path, a)
  for path, layers in stacks.items():
    _set(tree, path, np.stack(layers))
  return tree


def _set(tree: dict, path: Path, value) -> None:
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


# --------------------------------------------------------------------------- YAML config

# AutoencoderKLConfig's defaults: ml-atoken's wrapper builds `AutoencoderKLConfig(**arch_cfg)`,
# so a key missing from the YAML takes these values, and any other key is an error there.
ARCH_DEFAULTS: dict[str, Any] = {
    "patch_size": (1, 8, 8), "in_channels": 192, "out_channels": 192, "latent_channels": 8,
    "encoder_model_channels": 768, "encoder_num_blocks": 12, "encoder_num_heads": None,
    "encoder_mlp_channels": 2048, "encoder_attn_mode": "swin", "encoder_window_size": 8,
    "encoder_pe_mode": "rope", "encoder_qk_rms_norm": True, "encoder_use_bias": True,
    "encoder_use_rms_norm": False,
    "decoder_model_channels": 768, "decoder_num_blocks": 12, "decoder_num_heads": None,
    "decoder_mlp_channels": 2048, "decoder_attn_mode": "swin", "decoder_window_size": 8,
    "decoder_pe_mode": "rope", "decoder_qk_rms_norm": True, "decoder_use_bias": True,
    "decoder_use_rms_norm": False,
    "use_decoder": True, "use_quantizer": False, "quantizer_type": "fsq",
    "quantizer_codebook_size": 65536, "quantizer_num_codebooks": 1,
    "quantizer_feature_dim": 48, "quantizer_chunk_size": 1,
}

# The architecture atoken_jax implements: these arch_cfg values are fixed.
REQUIRED_ARCH: dict[str, Any] = {
    "patch_size": [config_lib.PATCH_T, config_lib.PATCH_HW, config_lib.PATCH_HW],
    "in_channels": config_lib.PATCH_DIM, "out_channels": config_lib.PATCH_DIM,
    "encoder_attn_mode": "full", "encoder_qk_rms_norm": False,
    "encoder_use_bias": True, "encoder_use_rms_norm": False,
    "decoder_attn_mode": "full", "decoder_qk_rms_norm": True,
    "decoder_use_bias": False, "decoder_use_rms_norm": True,
    "use_decoder": True,
}

# Read only with attention modes we do not support (ml-atoken ignores them with "full").
_UNUSED_WITH_FULL_ATTENTION = ("encoder_window_size", "decoder_window_size")

# FSQ levels for a codebook size, as the FSQ paper suggests (ml-atoken's
# `levels_from_codebook_size`; the sizes with placeholder or binary levels are left out).
FSQ_LEVELS: dict[int, tuple[int, ...]] = {
    2**4: (5, 3), 2**6: (8, 8), 2**8: (8, 6, 5), 2**9: (8, 8, 8), 2**10: (8, 5, 5, 5),
    2**11: (8, 8, 6, 5), 2**12: (4, 4, 4, 4, 4, 4), 2**13: (8, 8, 8, 4, 4),
    2**14: (8, 8, 8, 6, 5), 2**16: (8, 8, 8, 5, 5, 5), 2**18 - 2: (23, 23, 23, 23),
    2**18 - 1: (13, 12, 12, 12, 12), 2**18: (8, 8, 6, 5, 5, 5, 5),
    2**18 + 1: (8, 8, 8, 8, 8, 8), 5**8 - 1: (25, 25, 25, 25), 5**8: (5,) * 8,
}


def read_arch_cfg(yaml_dict_or_path: Any) -> tuple[dict[str, Any], str]:
  """-> (model.model_cfg.arch_cfg, a name for messages) from a YAML path or its parsed dict.

  A dict that already is an arch_cfg (has `latent_channels`) is accepted as is.
  """
  if isinstance(yaml_dict_or_path, (str, os.PathLike)):
    source = os.fspath(yaml_dict_or_path)
    doc = checkpoint_io.load_yaml(source)
  elif isinstance(yaml_dict_or_path, Mapping):
    source, doc = "ml-atoken config", dict(yaml_dict_or_path)
  else:
    raise ValueError(f"expected a YAML path or dict, got {type(yaml_dict_or_path).__name__}")
  if "model" not in doc and "latent_channels" in doc:
    return doc, source
  arch = doc
  for key in ("model", "model_cfg", "arch_cfg"):
    if not isinstance(arch, Mapping) or key not in arch:
      raise ValueError(f"{source}: no model.model_cfg.arch_cfg mapping (missing {key!r})")
    arch = arch[key]
  if not isinstance(arch, Mapping):
    raise ValueError(f"{source}: model.model_cfg.arch_cfg must be a mapping")
  return dict(arch), source


def _int(arch: dict, key: str, source: str) -> int:
  v = arch[key]
  if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 1:
    raise ValueError(f"{source}: arch_cfg {key!r} must be a positive integer, got {v!r}")
  return int(v)


def _trunk(arch: dict, side: str, source: str) -> config_lib.TrunkConfig:
  if arch[f"{side}_num_heads"] is None:
    raise ValueError(f"{source}: arch_cfg {side + '_num_heads'!r} must be set (ml-atoken's "
                     "blocks need it too)")
  return config_lib.TrunkConfig(
      width=_int(arch, f"{side}_model_channels", source),
      depth=_int(arch, f"{side}_num_blocks", source),
      num_heads=_int(arch, f"{side}_num_heads", source),
      mlp_dim=_int(arch, f"{side}_mlp_channels", source))


def _use_rope(arch: dict, source: str) -> bool:
  """pe_mode 'joint' (learned table + 4D RoPE, the release) or 'learned' (table only) -> use_rope;
  both trunks alike (our `use_rope` covers both)."""
  modes = {"joint": True, "learned": False}
  for key in ("encoder_pe_mode", "decoder_pe_mode"):
    if arch[key] not in modes:
      raise ValueError(f"{source}: arch_cfg {key!r} = {arch[key]!r} is not supported; "
                       f"atoken_jax implements {sorted(modes)}")
  if arch["decoder_pe_mode"] != arch["encoder_pe_mode"]:
    raise ValueError(f"{source}: arch_cfg 'decoder_pe_mode' = {arch['decoder_pe_mode']!r} must "
                     f"equal encoder_pe_mode = {arch['encoder_pe_mode']!r} in atoken_jax")
  return modes[arch["encoder_pe_mode"]]


def _same(a, b) -> bool:
  if isinstance(b, list):
    return isinstance(a, (list, tuple)) and list(a) == b
  return type(a) is type(b) and a == b  # noqa: E721 - True must not pass for 1


def _quantizer(arch: dict, latent_dim: int, source: str) -> dict[str, Any]:
  """ModelConfig fields of the bottleneck: {} (KL posterior) or the FSQ settings."""
  use = arch["use_quantizer"]
  if not isinstance(use, bool):
    raise ValueError(f"{source}: arch_cfg 'use_quantizer' must be true or false, got {use!r}")
  if not use:
    return {}  # ml-atoken builds no quantizer; the quantizer_* keys have no effect
  if arch["quantizer_type"] != "fsq":
    raise ValueError(f"{source}: arch_cfg 'quantizer_type' = {arch['quantizer_type']!r} is not "
                     "supported; atoken_jax implements 'fsq'")
  if arch["quantizer_chunk_size"] != 1:
    raise ValueError(f"{source}: arch_cfg 'quantizer_chunk_size' = "
                     f"{arch['quantizer_chunk_size']!r} is not supported; use 1")
  size = arch["quantizer_codebook_size"]
  if size not in FSQ_LEVELS:
    raise ValueError(f"{source}: arch_cfg 'quantizer_codebook_size' = {size!r} has no FSQ "
                     f"levels; choose from {sorted(FSQ_LEVELS)}")
  feature_dim = _int(arch, "quantizer_feature_dim", source)
  if feature_dim != latent_dim:
    raise ValueError(f"{source}: arch_cfg 'quantizer_feature_dim' = {feature_dim} must equal "
                     f"latent_channels = {latent_dim} (FSQ codes are the decoder's input)")
  levels, books = FSQ_LEVELS[size], _int(arch, "quantizer_num_codebooks", source)
  if len(levels) * books != feature_dim:
    raise ValueError(
        f"{source}: arch_cfg 'quantizer_num_codebooks' = {books} times {len(levels)} levels "
        f"per codebook must equal quantizer_feature_dim = {feature_dim} (otherwise FSQ has "
        "learned projections, which atoken_jax does not implement)")
  return dict(quantizer="fsq", fsq_levels=levels, fsq_codebooks=books)


def config_from_ml_atoken_yaml(yaml_dict_or_path: Any, **overrides) -> config_lib.ModelConfig:
  """Our ModelConfig for an ml-atoken config (`model.model_cfg.arch_cfg`).

  Args:
    yaml_dict_or_path: path of e.g. `configs/atoken-soc.yaml`, or its parsed dict.
    **overrides: ModelConfig fields that are ours only (scan_layers, dtype, remat, ...).

  Raises:
    ValueError naming the key, for a key ml-atoken does not know, or a setting atoken_jax does
    not implement (another attention or position mode, other norms or biases, LFQ, ...).
  """
  arch, source = read_arch_cfg(yaml_dict_or_path)
  unknown = sorted(set(arch) - set(ARCH_DEFAULTS))
  if unknown:
    raise ValueError(f"{source}: unknown arch_cfg key(s) {unknown} (ml-atoken's "
                     "AutoencoderKLConfig has no such field)")
  arch = {**ARCH_DEFAULTS, **arch}
  for key, want in REQUIRED_ARCH.items():
    if not _same(arch[key], want):
      raise ValueError(f"{source}: arch_cfg {key!r} = {arch[key]!r} is not supported; "
                       f"atoken_jax implements {want!r}")
  latent_dim = _int(arch, "latent_channels", source)
  fields = {f.name for f in dataclasses.fields(config_lib.ModelConfig)}
  bad = sorted(set(overrides) - fields)
  if bad:
    raise ValueError(f"unknown ModelConfig override(s) {bad}; choose from {sorted(fields)}")
  settings = dict(encoder=_trunk(arch, "encoder", source), decoder=_trunk(arch, "decoder", source),
                  latent_dim=latent_dim, use_rope=_use_rope(arch, source),
                  **_quantizer(arch, latent_dim, source))
  return config_lib.ModelConfig(**{**settings, **overrides})


def arch_cfg_from_config(cfg: config_lib.ModelConfig) -> dict[str, Any]:
  """The ml-atoken arch_cfg that builds the same autoencoder as `cfg` (for exports)."""
  arch = {k: (list(v) if isinstance(v, list) else v) for k, v in REQUIRED_ARCH.items()}
  arch["latent_channels"] = cfg.latent_dim
  pe_mode = "joint" if cfg.use_rope else "learned"
  arch.update(encoder_pe_mode=pe_mode, decoder_pe_mode=pe_mode)
  for side in ("encoder", "decoder"):
    t = getattr(cfg, side)
    arch.update({f"{side}_model_channels": t.width, f"{side}_num_blocks": t.depth,
                 f"{side}_num_heads": t.num_heads, f"{side}_mlp_channels": t.mlp_dim})
  if cfg.quantizer == "fsq":
    sizes = {levels: size for size, levels in FSQ_LEVELS.items()}
    if tuple(cfg.fsq_levels) not in sizes:
      raise ValueError(f"FSQ levels {cfg.fsq_levels} have no ml-atoken codebook size")
    arch.update(use_quantizer=True, quantizer_type="fsq",
                quantizer_codebook_size=sizes[tuple(cfg.fsq_levels)],
                quantizer_feature_dim=cfg.latent_dim, quantizer_num_codebooks=cfg.fsq_codebooks,
                quantizer_chunk_size=1)
  return arch


# --------------------------------------------------------------------------- files


def load_ml_atoken(checkpoint_path: str | os.PathLike, yaml_path: Any, **overrides
                   ) -> tuple[config_lib.ModelConfig, dict]:
  """(config, params) from an ml-atoken checkpoint (.safetensors, or .pt read weights-only)."""
  cfg = config_from_ml_atoken_yaml(yaml_path, **overrides)
  state = checkpoint_io.load_state_dict(checkpoint_path)
  return cfg, state_dict_to_params(state, cfg, source=os.fspath(checkpoint_path))


def save_ml_atoken(params: Any, cfg: config_lib.ModelConfig, path: str | os.PathLike,
                   dtype: Any = None) -> None:
  """Writes `params` as an ml-atoken checkpoint (.safetensors or .pt)."""
  checkpoint_io.save_state_dict(params_to_state_dict(params, cfg, dtype), path)
