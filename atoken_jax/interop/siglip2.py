"""Import SigLIP2 vision weights (Hugging Face `Siglip2VisionModel`) into an AToken encoder.

Stage-1 initialisation (paper §3.5): SigLIP2's patch embedding Linear(768 -> C) fills the
frame-0 columns of our Linear(3072 -> C) (the (pt, ph, pw, c) flattening puts frame 0 first;
SigLIP2 patches are flattened (ph, pw, c)), the temporal columns start at zero, and the
position table, blocks, post-LayerNorm and attention-pooling head are copied as they are.

Accepted inputs: a Hugging Face model directory (config.json + *.safetensors), a safetensors
file, or a state dict; keys with or without the `vision_model.` prefix (full `Siglip2Model`
checkpoints); text-tower keys are ignored.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Mapping

import numpy as np

from atoken_jax import config as config_lib
from atoken_jax.interop import checkpoint_io

# Head counts of the released SigLIP2 vision towers, by width (shapes do not reveal them).
_HEADS_BY_WIDTH = {768: 12, 1024: 16, 1152: 16, 1536: 16}


def load_hf(path_or_state, config_key: str) -> tuple[dict[str, np.ndarray], dict]:
  """A Hugging Face checkpoint -> (state dict, the `config_key` part of config.json or {}).

  path_or_state: a model directory (config.json + *.safetensors), a .safetensors / .pt file,
  or a state dict.
  """
  if isinstance(path_or_state, Mapping):
    return {k: np.asarray(v) for k, v in path_or_state.items()}, {}
  path = os.fspath(path_or_state)
  if not os.path.isdir(path):
    return checkpoint_io.load_state_dict(path), {}
  files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
  if not files:
    raise ValueError(f"{path}: no .safetensors files in this directory")
  state = {}
  for f in files:
    state.update(checkpoint_io.load_state_dict(f))
  hf = {}
  cfg_path = os.path.join(path, "config.json")
  if os.path.exists(cfg_path):
    with open(cfg_path) as f:
      hf = json.load(f)
    hf = hf.get(config_key, hf)
  return state, hf


def read_siglip2(path_or_state) -> tuple[dict[str, np.ndarray], int | None]:
  """-> (vision state dict without prefix, num_heads from config.json or None)."""
  state, hf = load_hf(path_or_state, "vision_config")
  vision = {}
  for k, v in state.items():
    if k.startswith("vision_model."):
      vision[k[len("vision_model."):]] = np.asarray(v)
    elif not k.startswith(("text_model.", "logit_scale", "logit_bias")):
      vision[k] = np.asarray(v)
  if "embeddings.patch_embedding.weight" not in vision:
    raise ValueError("not a SigLIP2 vision checkpoint: embeddings.patch_embedding.weight missing")
  return vision, hf.get("num_attention_heads")


def encoder_trunk_config(vision: Mapping[str, np.ndarray],
                         num_heads: int | None = None) -> config_lib.TrunkConfig:
  """The encoder shape a SigLIP2 vision state dict implies."""
  width = vision["embeddings.patch_embedding.weight"].shape[0]
  depth = len({k.split(".")[2] for k in vision if k.startswith("encoder.layers.")})
  mlp = vision["encoder.layers.0.mlp.fc1.weight"].shape[0]
  heads = num_heads or _HEADS_BY_WIDTH.get(width)
  if heads is None:
    raise ValueError(f"cannot tell the head count of a width-{width} SigLIP2; pass num_heads")
  return config_lib.TrunkConfig(width=width, depth=depth, num_heads=heads, mlp_dim=mlp)


def _linear(w, b=None):
  out = {"kernel": np.asarray(w, np.float32).T}
  if b is not None:
    out["bias"] = np.asarray(b, np.float32)
  return out


def layer_norm(s, prefix):
  """HF LayerNorm `prefix.{weight,bias}` -> our {scale, bias}."""
  return {"scale": np.asarray(s[prefix + ".weight"], np.float32),
          "bias": np.asarray(s[prefix + ".bias"], np.float32)}


def mlp(s, prefix):
  return {"fc1": _linear(s[prefix + ".fc1.weight"], s[prefix + ".fc1.bias"]),
          "fc2": _linear(s[prefix + ".fc2.weight"], s[prefix + ".fc2.bias"])}


def encoder_blocks(s, depth: int, width: int, heads: int) -> dict:
  """HF `encoder.layers.{i}` (SigLIP vision and text towers alike) -> our `blocks_{i}`."""
  c, h = width, heads
  d = c // h
  blocks = {}
  for i in range(depth):
    p = f"encoder.layers.{i}"
    qkv_w = np.stack([np.asarray(s[f"{p}.self_attn.{n}_proj.weight"], np.float32).T
                      for n in "qkv"], axis=1)  # [C, 3, C]
    qkv_b = np.stack([np.asarray(s[f"{p}.self_attn.{n}_proj.bias"], np.float32) for n in "qkv"])
    out_w = np.asarray(s[f"{p}.self_attn.out_proj.weight"], np.float32).T  # [C_in, C_out]
    blocks[f"blocks_{i}"] = {
        "norm1": layer_norm(s, f"{p}.layer_norm1"),
        "norm2": layer_norm(s, f"{p}.layer_norm2"),
        "attn": {"qkv": {"kernel": qkv_w.reshape(c, 3, h, d), "bias": qkv_b.reshape(3, h, d)},
                 "out": {"kernel": out_w.reshape(h, d, c),
                         "bias": np.asarray(s[f"{p}.self_attn.out_proj.bias"], np.float32)}},
        "mlp": mlp(s, f"{p}.mlp"),
    }
  return blocks


def siglip2_to_encoder_params(vision: Mapping[str, np.ndarray],
                              trunk: config_lib.TrunkConfig) -> dict:
  """-> {"encoder": ..., "head": ...} in our per-layer (unscanned) layout, float32."""
  c, h = trunk.width, trunk.num_heads
  d = c // h
  s = vision
  patch_w = np.asarray(s["embeddings.patch_embedding.weight"], np.float32)  # [C, 768]
  if patch_w.shape != (c, config_lib.FRAME_PATCH_DIM):
    raise ValueError(f"SigLIP2 patch embedding must be [{c}, 768] (patch 16, RGB), got "
                     f"{patch_w.shape}")
  pos = np.asarray(s["embeddings.position_embedding.weight"], np.float32)
  if pos.shape != (config_lib.POS_GRID ** 2, c):
    raise ValueError(f"SigLIP2 position table must be [256, {c}] (16x16), got {pos.shape}")
  kernel = np.zeros((config_lib.PATCH_DIM, c), np.float32)
  kernel[:config_lib.FRAME_PATCH_DIM] = patch_w.T
  enc = {
      "input_layer": {"kernel": kernel,
                      "bias": np.asarray(s["embeddings.patch_embedding.bias"], np.float32)},
      "pos_embedder": {"embedding": pos},
      "post_layernorm": layer_norm(s, "post_layernorm"),
      "transformer": encoder_blocks(s, trunk.depth, c, h),
  }
  in_w = np.asarray(s["head.attention.in_proj_weight"], np.float32)  # [3C, C]: q | k | v
  in_b = np.asarray(s["head.attention.in_proj_bias"], np.float32)
  head = {
      "probe": np.asarray(s["head.probe"], np.float32).reshape(c),
      "query": {"kernel": in_w[:c].T.reshape(c, h, d), "bias": in_b[:c].reshape(h, d)},
      "key_value": {"kernel": in_w[c:].T.reshape(c, 2, h, d), "bias": in_b[c:].reshape(2, h, d)},
      "out": {"kernel": np.asarray(s["head.attention.out_proj.weight"], np.float32).T.reshape(
          h, d, c), "bias": np.asarray(s["head.attention.out_proj.bias"], np.float32)},
      "layernorm": layer_norm(s, "head.layernorm"),
      "mlp": mlp(s, "head.mlp"),
  }
  return {"encoder": enc, "head": head}
