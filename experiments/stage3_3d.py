"""Stage 3 (paper §3.5): + 3D reconstruction and understanding; 50k steps; images up to 2048
px, video up to 1024 px. Ratio I^r : V^u : V^r : 3D^u : 3D^r = 22.2 : 11.1 : 44.4 : 11.1 : 11.1
(2 : 1 : 4 : 1 : 1 micro-batches per step), image understanding in every step.

  atoken train --config=experiments/stage3_3d.py:tiny --workdir=/tmp/s3 \\
      --config.init.previous_stage=/tmp/s2
"""
from experiments import common


def get_config(arg: str = "so400m"):
  c = common.base(arg)
  tiny = arg == "tiny"
  c.stage = 3
  c.total_steps = 40 if tiny else 50_000
  c.model.latent_dim = 48
  c.data = common.data(3, arg)  # what every task shares; tasks: their changes
  if tiny:  # fine-tuning the previous stage: a lower peak LR than stage 1's
    c.optim.update(lr=2e-3, end_lr=2e-4, warmup_steps=10)
  accum = {"image_recon": 2, "image_understand": 1, "video_understand": 1, "video_recon": 4,
           "voxels_understand": 1, "voxels_recon": 1}
  if tiny:
    accum = {k: 1 for k in accum}
  c.tasks = common.tasks(3, arg, accum)
  return c
