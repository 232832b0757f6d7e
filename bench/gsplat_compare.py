"""Compare `atoken_jax.render.rasterize` with gsplat's `rasterization` on one scene (GPU).

Renders the synthetic TRELLIS-sized asset of bench_render.py with both renderers, same camera
and settings (our filter_2d = gsplat eps2d; mip=True = rasterize_mode "antialiased"; depth =
gsplat "ED"), and prints the max / mean absolute differences of rgb, alpha and depth, plus
forward and forward+backward times and the speed ratio (ours / gsplat; > 1 means we are slower).

  pip install gsplat            # needs torch with CUDA; JAX needs jax[cuda12]
  python bench/gsplat_compare.py --size 512
  python bench/gsplat_compare.py --size 512 --sweep   # also try tiles_per_batch × block_size

Without gsplat (or without a GPU) it still times our renderer and says what it skipped.
Older gsplat versions bound each footprint at 3σ instead of the opacity-aware α = 1/255 radius,
so opaque Gaussians lose a faint rim there (differences up to ~0.01·opacity at footprint edges).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with torch

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_render import bench_camera, synthetic_asset  # noqa: E402

from atoken_jax import render  # noqa: E402


def _time(fn, repeats, sync=lambda result: result):
  sync(fn())  # compile / warm up
  start = time.perf_counter()
  for _ in range(repeats):
    result = sync(fn())
  return (time.perf_counter() - start) / repeats, result


def run_ours(asset, camera, args, tiles_per_batch, block_size):
  params = {k: jnp.asarray(v) for k, v in asset.items()}
  options = dict(filter_2d=args.filter_2d, mip=args.mip, tile_capacity=args.capacity,
                 max_pairs=args.max_pairs, tiles_per_batch=tiles_per_batch,
                 block_size=block_size)
  forward = jax.jit(lambda p: render.rasterize(**p, camera=camera, **options))

  def loss(p):
    out = render.rasterize(**p, camera=camera, **options)
    return jnp.mean(out.rgb) + jnp.mean(out.alpha)
  backward = jax.jit(jax.grad(loss))
  fwd_s, out = _time(lambda: forward(params), args.repeats, jax.block_until_ready)
  bwd_s, _ = _time(lambda: backward(params), args.repeats, jax.block_until_ready)
  return fwd_s, bwd_s, out


def run_gsplat(asset, camera, args):
  import torch
  from gsplat import rasterization
  device = "cuda"
  tensors = {k: torch.tensor(v, device=device) for k, v in asset.items()}
  for value in tensors.values():
    value.requires_grad_(True)
  viewmats = torch.tensor(np.asarray(camera.world_to_camera), device=device)[None]
  ks = torch.tensor(np.asarray(camera.intrinsics), device=device)[None]

  def forward():
    renders, alphas, _ = rasterization(
        tensors["means"], tensors["quats_wxyz"], tensors["scales"], tensors["opacities"],
        tensors["colors"], viewmats, ks, camera.width, camera.height,
        near_plane=float(camera.near), far_plane=float(camera.far), eps2d=args.filter_2d,
        rasterize_mode="antialiased" if args.mip else "classic", render_mode="RGB+ED",
        backgrounds=torch.zeros(1, 3, device=device))
    return renders, alphas

  def forward_backward():
    renders, alphas = forward()
    (renders[..., :3].mean() + alphas.mean()).backward()
    return renders

  sync = lambda result: (torch.cuda.synchronize(), result)[1]
  with torch.no_grad():
    fwd_s, (renders, alphas) = _time(forward, args.repeats, sync)
  bwd_s, _ = _time(forward_backward, args.repeats, sync)
  images = renders[0].detach().cpu().numpy()
  return fwd_s, bwd_s, images[..., :3], alphas[0, ..., 0].detach().cpu().numpy(), images[..., 3]


def _report_diff(name, ours, theirs, mask=None):
  diff = np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))
  if mask is not None:
    diff = diff[mask]
  print(f"  {name:5s} max |diff| {diff.max():.2e}  mean {diff.mean():.2e}  "
        f"> 1e-3: {np.mean(diff > 1e-3) * 100:.3f}%")


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--voxels", type=int, default=20_000)
  parser.add_argument("--per-voxel", type=int, default=32)
  parser.add_argument("--size", type=int, default=512)
  parser.add_argument("--capacity", type=int, default=None,
                      help="tile_capacity (default: no limit, exact)")
  parser.add_argument("--max-pairs", type=int, default=None,
                      help="pair buffer (default: 8 per Gaussian)")
  parser.add_argument("--tiles-per-batch", type=int, default=256)
  parser.add_argument("--block-size", type=int, default=32)
  parser.add_argument("--filter-2d", type=float, default=0.3)
  parser.add_argument("--mip", action="store_true", help="antialiased / mip compensation")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--sweep", action="store_true",
                      help="also time tiles_per_batch in {64,256,1024} x block_size in {16,32,64}")
  args = parser.parse_args()

  asset = synthetic_asset(args.voxels, args.per_voxel)
  camera = bench_camera(args.size)
  print(f"{len(asset['means'])} Gaussians, {args.size}x{args.size}, jax on "
        f"{jax.devices()[0].device_kind}, filter_2d {args.filter_2d}, mip {args.mip}")
  fwd, bwd, out = run_ours(asset, camera, args, args.tiles_per_batch, args.block_size)
  print(f"ours:   forward {fwd * 1e3:8.2f} ms   forward+backward {bwd * 1e3:8.2f} ms   "
        f"(overflow {int(out.overflow)}, lossy tiles {int(out.lossy_tiles)}, "
        f"max tile load {int(out.max_tile_load)})")
  if args.sweep:
    for tiles_per_batch in (64, 256, 1024):
      for block_size in (16, 32, 64):
        f, b, _ = run_ours(asset, camera, args, tiles_per_batch, block_size)
        print(f"  tiles_per_batch {tiles_per_batch:4d} block_size {block_size:3d}: "
              f"forward {f * 1e3:8.2f} ms  forward+backward {b * 1e3:8.2f} ms")
  try:
    g_fwd, g_bwd, rgb, alpha, depth = run_gsplat(asset, camera, args)
  except Exception as error:  # no gsplat, no torch, or no CUDA here
    print(f"gsplat: skipped ({type(error).__name__}: {error})")
    return
  print(f"gsplat: forward {g_fwd * 1e3:8.2f} ms   forward+backward {g_bwd * 1e3:8.2f} ms")
  print(f"speed ratio ours/gsplat: forward {fwd / g_fwd:.2f}x, "
        f"forward+backward {bwd / g_bwd:.2f}x (goal: <= 2x)")
  print("differences (ours - gsplat):")
  _report_diff("rgb", out.rgb, rgb)
  _report_diff("alpha", out.alpha, alpha)
  covered = (np.asarray(out.alpha) > 0.5) & (alpha > 0.5)
  _report_diff("depth", out.depth, depth, covered)


if __name__ == "__main__":
  main()
