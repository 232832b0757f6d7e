"""`atoken tokenize`: image / video files -> latents and reconstructions written beside them.

  atoken tokenize photo.jpg clip.mp4 --ml-atoken atoken-soc.safetensors --yaml atoken-soc.yaml
  atoken tokenize photo.png --checkpoint DIR [--step N] [--ema]
                             # an `atoken train` workdir, or a directory from Tokenizer.save

For each input X it writes X.latents.safetensors (or .npz): mean / logvar (continuous models)
or codes / indices (FSQ), coords (t, x, y, z) in ml-atoken's token order, and X.recon.png
(images) or X.recon.mp4 (videos), centre-cropped to multiples of 16 as the model sees them.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_EXT = (".mp4", ".webm", ".mov", ".mkv", ".avi")


def read_media(path: str) -> np.ndarray:
  """-> float32 image [H, W, 3] or video [T, H, W, 3] in [-1, 1]."""
  from data_pipelines import decode  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file")
  with open(path, "rb") as f:
    data = f.read()
  ext = os.path.splitext(path)[1].lower()
  try:
    if ext in IMAGE_EXT:
      pixels = np.asarray(decode.decode_image({"kind": "image", "bytes": data}))
    elif ext in VIDEO_EXT:
      frames, _ = decode.video_frames({"kind": "video", "bytes": data},
                                      lambda n, fps: range(n))
      pixels = np.stack(frames)
    else:
      raise ValueError(f"{path}: unsupported file type {ext!r} (images: {IMAGE_EXT}, videos: "
                       f"{VIDEO_EXT})")
  except decode.BadData as e:
    raise ValueError(f"{path}: cannot decode ({e})") from None
  return pixels.astype(np.float32) / 127.5 - 1.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
  return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _load_tokenizer(args):
  from atoken_jax.train import restore  # pylint: disable=import-outside-toplevel
  if args.checkpoint:
    return restore.load_tokenizer(args.checkpoint, args.yaml or "", args.step, args.ema)
  if args.ml_atoken and args.yaml:
    return restore.load_tokenizer(args.ml_atoken, args.yaml)
  raise ValueError("give --checkpoint DIR, or --ml-atoken FILE with --yaml FILE")


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(prog="atoken tokenize", description=__doc__.splitlines()[0])
  p.add_argument("files", nargs="+")
  p.add_argument("--checkpoint", help="an `atoken train` workdir, or a Tokenizer.save directory")
  p.add_argument("--step", type=int, default=None, help="workdir: this step (default: newest)")
  p.add_argument("--ema", action="store_true", help="workdir: the EMA parameters")
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
