"""Stage 1 (paper §3.5, Table 2): image reconstruction + image understanding, latent 32, the
encoder initialised from SigLIP2-So400m/16-NaFlex; 200k steps, images 64-512 px.

  atoken train --config=experiments/stage1_image.py:tiny --workdir=/tmp/s1   # CPU, bundled data
  atoken train --config=experiments/stage1_image.py --workdir=$WORKDIR \\
      --config.init.siglip2=$SIGLIP2 --config.loss.teacher=$SIGLIP2 \\
      --config.loss.text_tower=$SIGLIP2 --config.loss.lpips_weights=$LPIPS \\
      --config.tasks.image_recon.data.sources="('tfds:imagenet2012',)"
"""
from experiments import common


def get_config(arg: str = "so400m"):
  c = common.base(arg)
  tiny = arg == "tiny"
  c.stage = 1
  c.total_steps = 2_000 if tiny else 200_000
  c.model.latent_dim = 32
  c.data = common.data(1, arg)  # what every task shares; tasks: their changes
  c.tasks = common.tasks(1, arg, {"image_recon": 1, "image_understand": 1})
  if tiny:  # more photos per step: 4 rows of 256 tokens (~40 photos of 64-128 px)
    c.tasks.image_recon.data.batch_rows = 4
  return c
