"""`atoken tokenize`: image / video files -> latents and reconstructions written beside them.

  atoken tokenize photo.jpg clip.mp4 --ml-atoken atoken-soc.safetensors --yaml atoken-soc.yaml
  atoken tokenize photo.png --checkpoint DIR [--step N] [--ema]
                             # an `atoken train` workdir, or a directory from Tokenizer.save

For each input X it writes X.latents.safetensors (or .npz): mean / logvar (continuous models)
or codes / indices (FSQ), coords (t, x, y, z) in ml-atoken's token order, and X.recon.png
(images) or X.recon.mp4 (videos), centre-cropped to multiples of 16 as the model sees them.
Frames over --max-pixels (default 1024 x 1024) are resized to fit, keeping their aspect ratio
(one line on stderr says so), or refused with --on-oversize=refuse.
"""
from __future__ import annotations

import os

import numpy as np
from atoken_jax import cli_errors, pixel_budget
from atoken_jax.atomic_write import write_atomic

def read_media(path: str, budget: pixel_budget.PixelBudget | None = None
               ) -> np.ndarray:
  """-> float32 image [H, W, 3] or video [T, H, W, 3] in [-1, 1], within `budget` per frame,
  decoded by the data pipeline's one decoder (`decode.read_media_file`)."""
  from data_pipelines import decode, folder_source  # pylint: disable=import-outside-toplevel
  budget = budget or pixel_budget.PixelBudget()
  if os.path.isdir(path):
    raise ValueError(f"{path}: is a folder; pass image or video files")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file")
  if folder_source.modality_of(path) != "image":  # videos, animated GIF/WebP; refuses the rest
    return budget.frames(decode.read_media_file(path), path).astype(np.float32) / 127.5 - 1.0
  with open(path, "rb") as f:
    data = f.read()
  stored = []

  def hint(h, w):  # resizing: a JPEG then decodes at a reduced size that still covers it
    stored.append((h, w))
    return budget.size_for(h, w) if budget.on_oversize == "resize" else (h, w)
  try:
    img = decode.decode_image({"kind": "image", "bytes": data}, size_for=hint)
  except decode.BadData as e:
    raise ValueError(f"{path}: cannot decode ({e})") from None
  pixels = np.asarray(budget.image(img, path, stored[0] if stored else None))
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
  p = cli_errors.ArgumentParser(prog="atoken tokenize", description=__doc__.splitlines()[0])
  p.add_argument("files", nargs="+")
  p.add_argument("--checkpoint", help="an `atoken train` workdir, or a Tokenizer.save directory")
  p.add_argument("--step", type=int, default=None, help="workdir: this step (default: newest)")
  p.add_argument("--ema", action="store_true", help="workdir: the EMA parameters")
  p.add_argument("--ml-atoken", help="ml-atoken weights (.safetensors or .pt)")
  p.add_argument("--yaml", help="ml-atoken YAML config")
  p.add_argument("--format", choices=["safetensors", "npz"], default="safetensors")
  p.add_argument("--posterior", choices=["mean", "sample"], default="mean")
  p.add_argument("--out-dir", help="write here instead of beside each input")
  p.add_argument("--max-pixels", type=int, default=pixel_budget.DEFAULT_MAX_PIXELS,
                 help="pixel budget per frame (0 = no limit)")
  p.add_argument("--on-oversize", choices=pixel_budget.ON_OVERSIZE, default="resize",
                 help="frames over --max-pixels: resize them to fit, or refuse")
  args = p.parse_args(argv)
  if not args.checkpoint and not (args.ml_atoken and args.yaml):
    raise cli_errors.UsageError("give --checkpoint DIR, or --ml-atoken FILE with --yaml FILE")
  budget = pixel_budget.PixelBudget(args.max_pixels, args.on_oversize)
  inputs = [read_media(f, budget) for f in args.files]  # bad files refused before any load
  tok = _load_tokenizer(args)
  enc = tok.encode(inputs, posterior=args.posterior)
  rec = tok.decode(enc)
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
      write_atomic(latents, lambda f: np.savez(f, **arrays))
    else:
      from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
      write_atomic(latents, lambda f: save_file(
          {k: np.ascontiguousarray(v) for k, v in arrays.items()}, f))
    pixels = _to_uint8(rec.pixels(i))
    if pixels.ndim == 3:
      out = f"{stem}.recon.png"
      write_atomic(out, lambda f: Image.fromarray(pixels).save(f))
    else:
      out = f"{stem}.recon.mp4"
      write_atomic(out, lambda f: write_video(pixels, f))
    print(f"{path}: {len(s.tokens)} tokens -> {latents}, {out}")
  return 0
