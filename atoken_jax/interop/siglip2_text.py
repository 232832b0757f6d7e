"""Import a Hugging Face SigLIP / SigLIP2 text tower into `atoken_jax.text.siglip2_text`.

Accepted inputs: a model directory (config.json + *.safetensors), a .safetensors/.pt file, or a
state dict, from `Siglip2TextModel` / `SiglipTextModel` (keys `embeddings.*`, `encoder.*`,
`final_layer_norm.*`, `head.*`) or a full `Siglip2Model` / `SiglipModel` (the same keys under
`text_model.`; the vision half is ignored). A full model's `logit_scale` / `logit_bias` come back
too: they are the starting point of the sigmoid loss and the scale of distillation logits.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from atoken_jax.interop import layer_stacking, siglip2
from atoken_jax.text import siglip2_text

_PREFIX = "text_model."
_OTHER = ("vision_model.", "logit_scale", "logit_bias")
# Head counts of the released SigLIP2 text towers, by width (shapes do not reveal them).
_HEADS_BY_WIDTH = {768: 12, 1024: 16, 1152: 16}


def read_siglip2_text(path_or_state) -> tuple[dict[str, np.ndarray], dict, dict[str, float]]:
  """-> (text state dict without `text_model.`, HF text config fields or {},
  {"logit_scale": ..., "logit_bias": ...} where the checkpoint has them)."""
  state, hf = siglip2.load_hf(path_or_state, "text_config")
  text, extras = {}, {}
  for k, v in state.items():
    if k in ("logit_scale", "logit_bias"):
      extras[k] = float(np.asarray(v, np.float32).reshape(-1)[0])
    elif k.startswith(_PREFIX):
      text[k[len(_PREFIX):]] = v
    elif not k.startswith(_OTHER):
      text[k] = v
  if "embeddings.token_embedding.weight" not in text:
    raise ValueError("not a SigLIP text checkpoint: embeddings.token_embedding.weight missing")
  return text, hf, extras


def text_config_from_state(text: Mapping[str, np.ndarray], hf: Mapping | None = None,
                           **overrides) -> siglip2_text.TextConfig:
  """The `TextConfig` a text state dict implies (heads and eps from `hf` where given)."""
  hf = hf or {}
  vocab, width = text["embeddings.token_embedding.weight"].shape
  heads = overrides.pop("num_heads", None) or hf.get("num_attention_heads") or \
      _HEADS_BY_WIDTH.get(width)
  if heads is None:
    raise ValueError(f"cannot tell the head count of a width-{width} text tower; pass num_heads")
  fields = dict(
      vocab_size=vocab, width=width, num_heads=heads,
      depth=len({k.split(".")[2] for k in text if k.startswith("encoder.layers.")}),
      mlp_dim=text["encoder.layers.0.mlp.fc1.weight"].shape[0],
      max_len=text["embeddings.position_embedding.weight"].shape[0],
      projection_size=text["head.weight"].shape[0],
      norm_eps=float(hf.get("layer_norm_eps", 1e-6)))
  return siglip2_text.TextConfig(**{**fields, **overrides})


def siglip2_text_to_params(text: Mapping[str, np.ndarray],
                           cfg: siglip2_text.TextConfig) -> dict:
  """HF names -> our parameter tree (float32; scanned if `cfg.scan_layers`)."""
  f32 = lambda a: np.asarray(a, np.float32)
  s = text
  params = {
      "token_embedding": f32(s["embeddings.token_embedding.weight"]),
      "position_embedding": f32(s["embeddings.position_embedding.weight"]),
      "transformer": siglip2.encoder_blocks(s, cfg.depth, cfg.width, cfg.num_heads),
      "final_layer_norm": siglip2.layer_norm(s, "final_layer_norm"),
      "head": {"kernel": f32(s["head.weight"]).T, "bias": f32(s["head.bias"])},
  }
  return layer_stacking.stack_layers(params) if cfg.scan_layers else params


def load_siglip2_text(path_or_state, **overrides):
  """-> (TextConfig, params, {"logit_scale", "logit_bias"} where present).

  `overrides` go to the TextConfig (e.g. num_heads=..., scan_layers=True, dtype="bfloat16").
  """
  text, hf, extras = read_siglip2_text(path_or_state)
  cfg = text_config_from_state(text, hf, **overrides)
  return cfg, siglip2_text_to_params(text, cfg), extras
