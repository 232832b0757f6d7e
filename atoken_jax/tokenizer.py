"""`Tokenizer`: the user-level API — images, videos and voxel sets in, latents and pixels out.

    tok = aj.Tokenizer.from_ml_atoken("atoken-soc.safetensors", "atoken-soc.yaml")
    enc = tok.encode([image_hw3, video_thw3, aj.Voxels(coords, feats)], posterior="mean")
    enc[i].features, enc[i].mean, enc[i].logvar, enc[i].codes, enc[i].indices
    enc.pooled, enc.embedding
    rec = tok.decode(enc); rec.pixels(i)

Inputs are validated and tokenised on the host, packed into [B, L] rows whose lengths come from
`atoken_jax.row_plan`'s ladder (padding at most 1/7 of the computed tokens, few compiled shapes),
run through jitted model functions, and unpacked per sample in ml-atoken's token order.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from atoken_jax import attention_blocks
from atoken_jax import config as config_lib
from atoken_jax import packing
from atoken_jax import row_plan
from atoken_jax import tokens as tokens_lib
from atoken_jax.model import atoken as atoken_model


@dataclasses.dataclass
class SampleEncoding:
  """One sample's encoding, tokens in ml-atoken order.

  features [n, width] (encoder output after the final LayerNorm), mean / logvar [n, C],
  latent [n, C] (what the decoder receives), codes [n, C] / indices [n, G] for FSQ models.
  """
  features: np.ndarray
  mean: np.ndarray
  logvar: np.ndarray
  latent: np.ndarray
  tokens: tokens_lib.TokenSeq
  codes: np.ndarray | None = None
  indices: np.ndarray | None = None


@dataclasses.dataclass
class Encoding:
  """Per-sample encodings plus the batch-level pooled outputs.

  pooled [B, width]: the attention-pooling head's output; embedding [B, width]: pooled,
  L2-normalised (the release's `image_feat`).
  """
  samples: list[SampleEncoding]
  pooled: np.ndarray
  embedding: np.ndarray

  def __getitem__(self, i: int) -> SampleEncoding:
    return self.samples[i]

  def __len__(self) -> int:
    return len(self.samples)


@dataclasses.dataclass
class Reconstruction:
  """Decoded patches per sample ([n_i, 3072], pixel space [-1, 1]) and their token layout.
  Frames 1-3 of images and voxels are zero: they are padding, which the decoder does not
  compute (ml-atoken decodes and discards them)."""
  patches: list[np.ndarray]
  tokens: list[tokens_lib.TokenSeq]

  def __getitem__(self, i: int) -> np.ndarray:
    return self.patches[i]

  def __len__(self) -> int:
    return len(self.patches)

  def pixels(self, i: int):
    """Sample i as an image [H, W, 3] / video [T, H, W, 3] in [-1, 1], or `Voxels`."""
    n = len(self.tokens)
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
      raise ValueError(f"sample index must be an int, got {type(i).__name__}")
    if not -n <= i < n:
      raise ValueError(f"sample index {i!r} is out of range: this reconstruction holds {n} "
                       f"samples (0 to {n - 1})")
    seq = self.tokens[i]
    if seq.kind == "voxels":
      return tokens_lib.tokens_to_voxels(self.patches[i], seq)
    return tokens_lib.tokens_to_pixels(self.patches[i], seq)


class Tokenizer:
  """An AToken model (config + parameters) with host-side batching around jitted functions."""

  def __init__(self, cfg: config_lib.ModelConfig, params: Any, *, max_samples_per_row: int = 64,
               max_row_len: int | None = None, max_call_tokens: int = 1 << 15):
    """Batching (see `atoken_jax.row_plan.plan`): rows of at most `max_row_len` tokens (None:
    `row_plan.default_max_row_len(cfg)`), calls of at most `max_call_tokens` tokens."""
    self.cfg = cfg
    self.params = nn.meta.unbox(params)
    self.model = atoken_model.AToken(cfg)
    self.max_samples_per_row = max_samples_per_row
    self.max_row_len = row_plan.default_max_row_len(cfg) if max_row_len is None else max_row_len
    self.max_call_tokens = max_call_tokens

  # ------------------------------------------------------------------ construction
  @classmethod
  def init_random(cls, preset: str = "tiny", seed: int = 0, **overrides) -> "Tokenizer":
    """A freshly initialised model of a preset (`tiny`, `base`, `so400m`)."""
    cfg = config_lib.model_config(preset, **overrides)
    return cls(cfg, init_params(cfg, jax.random.key(seed)))

  @classmethod
  def from_ml_atoken(cls, weights_path: str, yaml_path: str, **overrides) -> "Tokenizer":
    """Apple's released checkpoint (.safetensors, or .pt read with weights_only) + its YAML."""
    from atoken_jax.interop import checkpoint_io, ml_atoken  # pylint: disable=import-outside-toplevel
    cfg = ml_atoken.config_from_ml_atoken_yaml(yaml_path, **overrides)
    state = checkpoint_io.load_state_dict(weights_path)
    return cls(cfg, ml_atoken.state_dict_to_params(state, cfg))

  @classmethod
  def from_siglip2(cls, path, decoder: str = "tiny", latent_dim: int = 32,
                   num_heads: int | None = None, seed: int = 0, **overrides) -> "Tokenizer":
    """Stage-1 initialisation: SigLIP2's vision tower as the encoder, a fresh decoder of the
    `decoder` preset's shape, a fresh bottleneck (latent_dim 32 in stage 1)."""
    from atoken_jax.interop import layer_stacking, siglip2  # pylint: disable=import-outside-toplevel
    vision, hf_heads = siglip2.read_siglip2(path)
    trunk = siglip2.encoder_trunk_config(vision, num_heads or hf_heads)
    dec = config_lib.PRESETS[decoder]["decoder"] if isinstance(decoder, str) else decoder
    cfg = config_lib.ModelConfig(encoder=trunk, decoder=dec, latent_dim=latent_dim, **overrides)
    params = jax.tree.map(np.asarray, init_params(cfg.replace(scan_layers=False),
                                                  jax.random.key(seed)))
    imported = siglip2.siglip2_to_encoder_params(vision, trunk)
    params = {**params, **imported}
    if cfg.scan_layers:
      params = layer_stacking.stack_layers(params)
    return cls(cfg, params)

  @classmethod
  def load(cls, directory: str) -> "Tokenizer":
    """Reads what `save` wrote: config.json + model.safetensors (ml-atoken names)."""
    from atoken_jax.interop import checkpoint_io, ml_atoken  # pylint: disable=import-outside-toplevel
    with open(os.path.join(directory, "config.json")) as f:
      cfg = config_lib.model_config_from_dict(json.load(f))
    state = checkpoint_io.load_state_dict(os.path.join(directory, "model.safetensors"))
    return cls(cfg, ml_atoken.state_dict_to_params(state, cfg))

  def save(self, directory: str) -> None:
    """Writes config.json and model.safetensors (ml-atoken names, loadable by `load`)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
      json.dump(config_lib.model_config_to_dict(self.cfg), f, indent=2)
    self.export_ml_atoken(os.path.join(directory, "model.safetensors"))

  def export_ml_atoken(self, path: str, dtype=None) -> None:
    """A flat state dict that ml-atoken's `load_state_dict(strict=True)` accepts."""
    from atoken_jax.interop import checkpoint_io, ml_atoken  # pylint: disable=import-outside-toplevel
    checkpoint_io.save_state_dict(ml_atoken.params_to_state_dict(self.params, self.cfg, dtype),
                                  path)

  # ------------------------------------------------------------------ running
  def plan(self, seqs: Sequence[tokens_lib.TokenSeq]) -> list[row_plan.Call]:
    """The calls (row length, rows, slots) that `encode` and `decode` run these samples as."""
    return row_plan.plan([len(s) for s in seqs], max_row_len=self.max_row_len,
                         max_samples_per_row=self.max_samples_per_row,
                         max_call_tokens=self.max_call_tokens)

  def _batches(self, seqs):
    for call in self.plan(seqs):
      yield row_plan.pack_call(
          seqs, call, tile_latent_frames=self.cfg.tile_latent_frames,
          block_len=attention_blocks.call_blocks(jax.default_backend()),
          kv_cache_frames=self.cfg.decoder_kv_cache_frames)

  def encode(self, inputs: Sequence[Any], posterior: str = "mean", seed: int = 0) -> Encoding:
    """Images [H,W,3], videos [T,H,W,3] (float, [-1, 1]) and `Voxels` -> an `Encoding`.

    posterior: "mean" (deterministic) or "sample" (mean + sigma * noise from `seed`, what the
    release's wrapper decodes). FSQ models always quantise the mean.
    """
    if posterior not in ("mean", "sample"):
      raise ValueError(f"posterior must be 'mean' or 'sample', got {posterior!r}")
    if (not isinstance(inputs, Sequence) or isinstance(inputs, (str, bytes, tokens_lib.Voxels))
        or not inputs):
      raise ValueError("encode takes a non-empty list of images, videos or Voxels, got "
                       f"{_describe(inputs)}")
    seqs = [_input_tokens(i, x) for i, x in enumerate(inputs)]
    per: dict[str, dict[int, np.ndarray]] = {}
    pooled_by = {}
    for call, batch in enumerate(self._batches(seqs)):
      # one noise stream per call, so "sample" posteriors differ between calls
      out = _encode_jit(self.cfg, posterior)(self.params, batch.for_model(),
                                               jax.random.fold_in(jax.random.key(seed), call))
      out = jax.tree.map(np.asarray, out)
      placed = batch.placed
      for k, v in out.items():
        if k != "pooled":
          per.setdefault(k, {}).update(zip(placed, packing.unpack(v, batch)))
      pooled_by.update(zip(placed, packing.unpack_samples(out["pooled"], batch)))
    pooled = np.stack([pooled_by[i] for i in range(len(seqs))])
    samples = [SampleEncoding(features=per["features"][i], mean=per["mean"][i],
                              logvar=per["logvar"][i], latent=per["latent"][i], tokens=seqs[i],
                              codes=per["codes"][i] if "codes" in per else None,
                              indices=per["indices"][i] if "indices" in per else None)
               for i in range(len(seqs))]
    embedding = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return Encoding(samples, pooled, embedding.astype(pooled.dtype))

  def decode(self, enc: Encoding) -> Reconstruction:
    """Decodes each sample's `latent` (edit it to decode something else)."""
    if not isinstance(enc, Encoding) or not enc.samples:
      raise ValueError(f"decode takes a non-empty Encoding (from encode), got {_describe(enc)}")
    seqs = [s.tokens for s in enc.samples]
    for i, s in enumerate(enc.samples):
      check_latent(i, s.latent, len(s.tokens), self.cfg.latent_dim)
    patches = {}
    for batch in self._batches(seqs):
      latent = np.zeros(batch.segment_ids.shape + (self.cfg.latent_dim,), np.float32)
      starts = np.cumsum(batch.sample_lengths, 1) - batch.sample_lengths
      for r, k in zip(*np.nonzero(batch.sample_index >= 0)):
        s = enc.samples[batch.sample_index[r, k]].latent
        latent[r, starts[r, k]:starts[r, k] + len(s)] = s
      rec = np.asarray(_decode_jit(self.cfg)(self.params, jnp.asarray(latent),
                                               batch.for_model()))
      patches.update(zip(batch.placed, packing.unpack(rec, batch)))
    return Reconstruction([_frame_padded(patches[i], seqs[i]) for i in range(len(seqs))], seqs)


def _frame_padded(patches: np.ndarray, seq: tokens_lib.TokenSeq) -> np.ndarray:
  """[n, 3072] decoded patches: a single-frame sample's frames 1-3 zero, whether its call
  decoded only frame 0 (768 wide) or all four."""
  return tokens_lib.full_width(patches[:, :tokens_lib.real_width(seq.kind)])


def _describe(x) -> str:
  if isinstance(x, np.ndarray):
    return f"an array of shape {x.shape}"
  return "an empty list" if isinstance(x, (list, tuple)) else type(x).__name__


def _input_tokens(i: int, x) -> tokens_lib.TokenSeq:
  try:
    return tokens_lib.to_tokens(x)
  except ValueError as e:
    raise ValueError(f"input {i}: {e}") from None


def check_latent(i: int, latent, n: int, dim: int) -> None:
  """ValueError unless sample i's latent is a finite real [n, dim] array (checked on the host)."""
  if not isinstance(latent, np.ndarray) or (latent.dtype.kind not in "fiu" and
                                            latent.dtype.name != "bfloat16"):
    raise ValueError(f"sample {i}: latent must be a real numpy array [{n}, {dim}], got "
                     f"{_describe(latent) if not isinstance(latent, np.ndarray) else latent.dtype}")
  if latent.shape != (n, dim):
    raise ValueError(f"sample {i}: latent must be [{n}, {dim}], got {latent.shape}")
  bad = np.count_nonzero(~np.isfinite(latent))
  if bad:
    raise ValueError(f"sample {i}: latent holds {bad} NaN or Inf values")


def init_params(cfg: config_lib.ModelConfig, rng: jax.Array, row_len: int = 16):
  """Fresh parameters (unboxed) of `cfg`; shapes do not depend on the dummy batch."""
  model = atoken_model.AToken(cfg)
  dummy = packing.empty_batch(1, row_len, 1)
  variables = jax.jit(functools.partial(model.init, posterior="mean"))(
      {"params": rng}, dummy)
  return nn.meta.unbox(variables["params"])


@functools.lru_cache(maxsize=None)
def _encode_jit(cfg: config_lib.ModelConfig, posterior: str):
  model = atoken_model.AToken(cfg)

  def run(params, batch, rng):
    def fn(m):
      enc = m.encode(batch)
      enc.update(m.latent(enc, posterior))
      return enc
    return model.apply({"params": params}, rngs={"posterior": rng}, method=fn)
  return jax.jit(run)


@functools.lru_cache(maxsize=None)
def _decode_jit(cfg: config_lib.ModelConfig):
  model = atoken_model.AToken(cfg)
  return jax.jit(lambda params, latent, batch: model.apply(
      {"params": params}, latent, batch, method=atoken_model.AToken.decode))
