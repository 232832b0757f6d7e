"""The Gaussian decoder trained alone (spec §2.9: L1 + 0.2 LPIPS(VGG) + 0.2 (1 - MS-SSIM) over
rendered views), on ground-truth voxel features or a frozen tokenizer's reconstruction.

  atoken gs train --config=experiments/gs_decoder_alone.py:tiny --workdir=/tmp/gs
  atoken gs train --config=experiments/gs_decoder_alone.py:so400m --workdir=DIR \\
      --config.data.sources="('arrayrecord:/data/objaverse',)" \\
      --config.loss.lpips_weights=/weights/lpips_vgg.safetensors \\
      --config.features=tokenizer --config.tokenizer.workdir=/runs/stage3

Args: "tiny" (2-core CPU smoke run on the bundled procedural assets, random LPIPS weights,
4 Gaussians per voxel, 64 px renders with 3 MS-SSIM scales) or "so400m" (the released decoder:
12 blocks, width 768, 32 Gaussians per voxel; 256 px = the stored renders, 5 MS-SSIM scales).
"""
from atoken_jax.gs3d import config as gs_config


def get_config(arg: str = "so400m"):
  return gs_config.default_config(arg, mode="alone")
