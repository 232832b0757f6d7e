"""Stage 2 (paper §3.5): + video reconstruction and understanding, latent 32 -> 48 (new
channels initialised as atoken_jax/train/stages.py says); 200k steps; images up to 1024 px,
video up to 512 px. Task ratio image-recon : video-understand : video-recon = 22.2 : 11.1 : 66.6
(2 : 1 : 6 micro-batches per step), image understanding in every step.

  atoken train --config=experiments/stage2_video.py:tiny --workdir=/tmp/s2 \\
      --config.init.previous_stage=/tmp/s1
"""
from experiments import common


def get_config(arg: str = "so400m"):
  c = common.base(arg)
  tiny = arg == "tiny"
  c.stage = 2
  c.total_steps = 1_100 if tiny else 200_000
  c.model.latent_dim = 48
  c.data = common.data(2, arg)  # what every task shares; tasks: their changes
  if tiny:  # stage 1's peak LR again after a short warm-up: the 16 new latent channels and
    # video start from scratch (bench/RESULTS.md, "Held-out clips vs PCA": +0.9 dB on clips
    # over 2e-3 with 2 rows and strides 1-12 at 600 steps)
    c.optim.update(lr=5e-3, end_lr=5e-4, warmup_steps=10)
  c.tasks = common.tasks(2, arg, {"image_recon": 2, "image_understand": 1,
                                  "video_understand": 1, "video_recon": 6})
  if tiny:  # per step two micro-batches of 4 rows x 256 tokens of photos (~80) and one of 3
    # rows of clips (~15 of 8 frames): the photos need the extra signal to beat PCA-48 within
    # `make train` (bench/RESULTS.md, "make train: stage 1 + stage 2")
    c.tasks = common.tasks(2, arg, {"image_recon": 2, "image_understand": 1,
                                    "video_understand": 1, "video_recon": 1})
    c.tasks.image_recon.data.batch_rows = 4
    c.tasks.video_recon.data.batch_rows = 3
  return c
