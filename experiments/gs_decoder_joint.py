"""The Gaussian decoder trained jointly with the tokenizer's decoder: the rendered-view objective
(L1 + 0.2 LPIPS(VGG) + 0.2 (1 - MS-SSIM)) back-propagates through the Gaussian decoder into the
AToken decoder that reconstructs the voxel features; the tokenizer also keeps its own 3D L1 on
those features (loss.rec_l1, ours) and, for KL models, the KL term. The encoder stays frozen
unless --config.tokenizer.trainable="('encoder','proj','decoder')" (encoder at 0.1x lr).

  atoken gs train --config=experiments/gs_decoder_joint.py:tiny --workdir=/tmp/gsj
  atoken gs train --config=experiments/gs_decoder_joint.py:so400m --workdir=DIR \\
      --config.tokenizer.workdir=/runs/stage3 --config.gs.init_weights=3d_decode_gs.safetensors \\
      --config.loss.lpips_weights=/weights/lpips_vgg.safetensors \\
      --config.data.sources="('arrayrecord:/data/objaverse',)"

Memory: gradients run through the tokenizer's full attention over every voxel of an asset; the
so400m run keeps assets up to 8192 voxels (larger ones are skipped and counted) and recomputes
the tokenizer's blocks in the backward pass (tokenizer.remat="full"). The tiny run uses the
small "procedural" assets (~1k voxels) so that it fits a CPU.

Start from a trained Gaussian decoder (gs.init_weights, or a workdir of the "alone" run via
`atoken gs export`): with the release's zero-initialised out_layer the tokenizer's decoder gets
no gradient from the rendered views until the Gaussian decoder has moved.
"""
from atoken_jax.gs3d import config as gs_config


def get_config(arg: str = "so400m"):
  c = gs_config.default_config(arg, mode="joint")
  if arg == "tiny":  # the bundled assets (~15k voxels) need too much memory for a CPU backward
    c.data.sources, c.data.row_len, c.gs.attention = ("procedural",), 2048, "masked"
  else:  # ours: the tokenizer's backward over a whole asset is the memory bottleneck
    c.data.batch_size, c.data.row_len, c.tokenizer.remat = 4, 8192, "full"
    c.optim.lr, c.optim.end_lr = 3e-5, 3e-6  # fine-tuning a trained tokenizer decoder
  return c
