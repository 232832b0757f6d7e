"""The frozen networks of the objective: LPIPS, the SigLIP2 vision teacher, the text tower.

Each is loaded from the file the config names. For the `tiny` preset only (CPU smoke runs),
a network whose file is not configured is randomly initialised, with a warning: the loss
terms then exercise the code path but are not the paper's perceptual or semantic losses.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from atoken_jax import config as config_lib
from atoken_jax import packing
from atoken_jax.model import atoken as atoken_model
from atoken_jax.text import siglip2_text

log = logging.getLogger(__name__)


class VisionTower(nn.Module):
  """SigLIP2's vision tower = our encoder (no RoPE) + attention-pooling head."""
  cfg: config_lib.ModelConfig

  @nn.compact
  def __call__(self, batch):
    features = atoken_model.Encoder(self.cfg, name="encoder")(batch)
    pooled = atoken_model.MAPHead(self.cfg.encoder.num_heads, self.cfg.encoder.mlp_dim,
                                  self.cfg.norm_eps, name="head")(features, batch.sample_ids, 1)
    return features, pooled[:, 0]


@dataclasses.dataclass(frozen=True)
class FrozenSpec:
  """Static description of the frozen networks (hashable: part of the jitted loss)."""
  lpips_net: str | None
  teacher: config_lib.ModelConfig | None
  text: siglip2_text.TextConfig | None


def _need(cfg: ml_collections.ConfigDict, name: str, path: str, what: str) -> bool:
  """True = load from path; False = random init (tiny only); raises otherwise."""
  if path:
    return True
  if cfg.preset == "tiny":
    log.warning("config.loss.%s is empty: using a randomly initialised %s (tiny preset only; "
                "the loss is then not the paper's)", name, what)
    return False
  raise ValueError(f"config.loss.{name}: set the path of the {what} (needed because its loss "
                   "weight is non-zero)")


def uses_lpips(loss) -> bool:
  """Whether the loss weights switch on the LPIPS network (LPIPS or Gram)."""
  return loss.lpips > 0 or loss.gram > 0


def uses_teacher(loss) -> bool:
  """Whether the loss weights switch on the SigLIP2 teacher (CLIP-perceptual, distillation)."""
  return loss.clip > 0 or loss.sem > 0


def load(cfg: ml_collections.ConfigDict, model_cfg: config_lib.ModelConfig,
         seed: int = 0) -> tuple[FrozenSpec, dict[str, Any]]:
  """-> (spec, params) for the frozen networks the loss weights switch on."""
  loss = cfg.loss
  params: dict[str, Any] = {}
  lpips_net = None
  if uses_lpips(loss):
    from atoken_jax import perceptual  # pylint: disable=import-outside-toplevel
    lpips_net = loss.lpips_net
    if _need(cfg, "lpips_weights", loss.lpips_weights, f"LPIPS-{lpips_net} network"):
      params["lpips"] = perceptual.load_lpips_params(lpips_net, path=loss.lpips_weights)
    else:
      params["lpips"] = perceptual.random_lpips_params(lpips_net, seed)
  teacher = None
  if uses_teacher(loss):
    from atoken_jax.interop import siglip2  # pylint: disable=import-outside-toplevel
    if _need(cfg, "teacher", loss.teacher, "SigLIP2 vision teacher"):
      vision, heads = siglip2.read_siglip2(loss.teacher)
      trunk = siglip2.encoder_trunk_config(vision, heads)
      teacher = model_cfg.replace(encoder=trunk, use_rope=False, scan_layers=False,
                                  dtype=model_cfg.dtype, quantizer=None)
      params["teacher"] = siglip2.siglip2_to_encoder_params(vision, trunk)
    else:
      teacher = model_cfg.replace(use_rope=False, scan_layers=False, quantizer=None)
      params["teacher"] = _random_tower(teacher, seed)
  text = None
  if loss.sem > 0 and not loss.text_embeddings_in_batch:
    from atoken_jax.interop import siglip2_text as text_io  # pylint: disable=import-outside-toplevel
    if _need(cfg, "text_tower", loss.text_tower, "SigLIP2 text tower"):
      text, params["text"], _ = text_io.load_siglip2_text(loss.text_tower)
    else:
      text = siglip2_text.text_config("tiny", width=model_cfg.encoder.width)
      params["text"] = siglip2_text.init_params(text, jax.random.PRNGKey(seed + 2))
  return FrozenSpec(lpips_net, teacher, text), params


def _random_tower(cfg: config_lib.ModelConfig, seed: int):
  variables = jax.jit(VisionTower(cfg).init)(jax.random.PRNGKey(seed + 1),
                                            packing.empty_batch(1, 16, 1))
  return nn.meta.unbox(variables["params"])
