"""Stage 4 (paper §3.5): the discrete tokenizer: FSQ on the posterior mean (8 groups x 6 dims x
4 levels, no new parameters), the stage-3 task mix; 100k steps.

  atoken train --config=experiments/stage4_fsq.py:tiny --workdir=/tmp/s4 \\
      --config.init.previous_stage=/tmp/s3
"""
from experiments import stage3_3d


def get_config(arg: str = "so400m"):
  c = stage3_3d.get_config(arg)
  c.stage = 4
  c.total_steps = 40 if arg == "tiny" else 100_000
  c.model.quantizer = "fsq"
  c.loss.kl = 0.0  # no posterior variance to regularise
  return c
