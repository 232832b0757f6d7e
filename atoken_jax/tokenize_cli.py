"""`atoken tokenize`: image / video files -> latents and reconstructions written beside them.

  atoken tokenize photo.jpg clip.mp4 --ml-atoken atoken-soc.safetensors --yaml atoken-soc.yaml
  atoken tokenize photo.png --checkpoint DIR          # a directory written by Tokenizer.save

For each input X it writes X.latents.safetensors (or .npz): mean / logvar (continuous models)
or codes / indices (FSQ), coords (t, x, y, z) in ml-atoken's token order, and X.recon.png
(images) or X.recon.mp4 (videos), centre-cropped to multiples of 16 as the model sees them.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

def read_media(path: str) -> np.ndarray:
  """-> float32 image [H, W, 3] or video [T, H, W, 3] in [-1, 1] (`decode.read_media_file`)."""
  from data_pipelines import decode  # pylint: disable=import-outside-toplevel
  return decode.read_media_file(path).astype(np.float32) / 127.5 - 1.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
  return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _load_tokenizer(args):
  import atoken_jax as aj  # pylint: disable=import-outside-toplevel
  if args.checkpoint:
    return aj.Tokenizer.load(args.checkpoint)
  if args.ml_atoken and args.yaml:
    return aj.Tokenizer.from_ml_atoken(args.ml_atoken, args.yaml)
  raise ValueError("give --checkpoint DIR, or --ml-atoken FILE with --yaml FILE")


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(prog="atoken tokenize", description=__doc__.splitlines()[0])
  p.add_argument("files", nargs="+")
  p.add_argument("--checkpoint", help="directory written by Tokenizer.save")
  p.add_argument("--ml-atoken", help="ml-atoken weights (.safetensors or .pt)")
  p.add_argument("--yaml", help="ml-atoken YAML config")
  p.add_argument("--format", choices=["safetensors", "npz"], default="safetensors")
  p.add_argument("--posterior", choices=["mean", "sample"], default="mean")
  p.add_argument("--out-dir", help="write here instead of beside each input")
  args = p.parse_args(argv)
  try:
    tok = _load_tokenizer(args)
    inputs = [read_media(f) for f in args.files]
    enc = tok.encode(inputs, posterior=args.posterior)
    rec = tok.decode(enc)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  from atoken_jax.media import write_video  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  for i, path in enumerate(args.files):
    stem = os.path.join(args.out_dir, os.path.basename(path)) if args.out_dir else path
    if args.out_dir:
      os.makedirs(args.out_dir, exist_ok=True)
    s = enc[i]
    arrays = {"coords": s.tokens.coords}
    if s.indices is not None:
      arrays.update(codes=s.codes, indices=s.indices)
    else:
      arrays.update(mean=s.mean, logvar=s.logvar)
    arrays["embedding"] = enc.embedding[i]
    latents = f"{stem}.latents.{args.format}"
    if args.format == "npz":
      np.savez(latents, **arrays)
    else:
      from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
      save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, latents)
    pixels = _to_uint8(rec.pixels(i))
    if pixels.ndim == 3:
      out = f"{stem}.recon.png"
      Image.fromarray(pixels).save(out)
    else:
      out = f"{stem}.recon.mp4"
      write_video(pixels, out)
    print(f"{path}: {len(s.tokens)} tokens -> {latents}, {out}")
  return 0
