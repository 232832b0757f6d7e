"""Forward and backward throughput of `atoken_jax.render.rasterize` on a TRELLIS-sized asset.

The synthetic asset imitates the AToken / TRELLIS Gaussian decoder output: `--voxels` occupied
voxels of a 64³ grid over [-0.5, 0.5]³ lying on a sphere shell, `--per-voxel` Gaussians each,
offset up to ±0.75 voxel, scales 0.003–0.012, TRELLIS-like opacities. Camera at radius 2 with a
40° field of view (the TRELLIS render setup).

  python bench/bench_render.py                       # 20k voxels × 32, 256² and 512²
  python bench/bench_render.py --voxels 2000 --sizes 128 256 --capacity 512
"""
from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from atoken_jax import render


def synthetic_asset(num_voxels: int, per_voxel: int, seed: int = 0, grid: int = 64):
  """Gaussians of a voxel shell: dict of float32 arrays (means, scales, quats_wxyz, ...)."""
  rng = np.random.default_rng(seed)
  centres = (np.stack(np.meshgrid(*[np.arange(grid)] * 3, indexing="ij"), -1).reshape(-1, 3)
             + 0.5) / grid - 0.5
  distance = np.abs(np.linalg.norm(centres, axis=-1) - 0.35)
  voxels = centres[np.argsort(distance, kind="stable")[:num_voxels]]
  n = num_voxels * per_voxel
  offsets = rng.uniform(-0.75, 0.75, (n, 3)) / grid
  logits = rng.normal(0.0, 2.0, n)
  return dict(
      means=(np.repeat(voxels, per_voxel, axis=0) + offsets).astype(np.float32),
      scales=np.exp(rng.uniform(np.log(0.003), np.log(0.012), (n, 3))).astype(np.float32),
      quats_wxyz=rng.normal(size=(n, 4)).astype(np.float32),
      opacities=(1.0 / (1.0 + np.exp(-logits))).astype(np.float32),
      colors=rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32))


def bench_camera(size: int) -> render.Camera:
  cams = render.orbit_cameras(1, 2.0, 20.0, 40.0, size, size, near=0.2, far=100.0)
  return cams.view(0)


def _timed(fn, repeats):
  result = jax.block_until_ready(fn())  # compile + warm up
  start = time.perf_counter()
  for _ in range(repeats):
    result = jax.block_until_ready(fn())
  return (time.perf_counter() - start) / repeats, result


def run(args):
  asset = {k: jnp.asarray(v) for k, v in synthetic_asset(args.voxels, args.per_voxel).items()}
  n = asset["means"].shape[0]
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({platform.processor() or '?'})"
        f"; {args.voxels} voxels x {args.per_voxel} = {n} Gaussians")
  options = dict(tile_capacity=args.capacity, max_pairs=args.max_pairs,
                 tiles_per_batch=args.tiles_per_batch, block_size=args.block_size,
                 filter_2d=0.1, mip=True)
  for size in args.sizes:
    camera = bench_camera(size)

    @jax.jit
    def forward(params):
      return render.rasterize(**params, camera=camera, **options)

    @jax.jit
    def backward(params):
      def loss(p):
        out = render.rasterize(**p, camera=camera, **options)
        return jnp.mean(out.rgb) + jnp.mean(out.alpha)
      return jax.grad(loss)(params)

    compile_start = time.perf_counter()
    jax.block_until_ready(forward(asset))
    compile_fwd = time.perf_counter() - compile_start
    fwd_s, out = _timed(lambda: forward(asset), args.repeats)
    compile_start = time.perf_counter()
    jax.block_until_ready(backward(asset))
    compile_bwd = time.perf_counter() - compile_start
    bwd_s, _ = _timed(lambda: backward(asset), args.repeats)
    print(f"{size}x{size}: forward {fwd_s * 1e3:.1f} ms ({1 / fwd_s:.2f} img/s), "
          f"forward+backward {bwd_s * 1e3:.1f} ms ({1 / bwd_s:.2f} img/s); "
          f"first calls (compile+run) {compile_fwd:.1f} s / {compile_bwd:.1f} s; "
          f"capacity {args.capacity}, max tile load {int(out.max_tile_load)}, "
          f"overflow {int(out.overflow)}, lossy tiles {int(out.lossy_tiles)}, "
          f"covered {float(jnp.mean(out.alpha > 0.5)):.2f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--voxels", type=int, default=20_000)
  parser.add_argument("--per-voxel", type=int, default=32)
  parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
  parser.add_argument("--capacity", type=int, default=None,
                      help="tile_capacity K (default: no limit)")
  parser.add_argument("--max-pairs", type=int, default=None,
                      help="pair buffer size (default: 8 per Gaussian)")
  parser.add_argument("--tiles-per-batch", type=int, default=None,
                      help="default: 4 on CPU, 256 on accelerators")
  parser.add_argument("--block-size", type=int, default=None,
                      help="default: 16 on CPU, 32 on accelerators")
  parser.add_argument("--repeats", type=int, default=2)
  run(parser.parse_args())


if __name__ == "__main__":
  main()
