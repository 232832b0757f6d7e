"""Shared defaults of the AToken experiment configs (paper §3.5, §4; paper notes §4-§5).

Configs are data: `base(preset)` returns the ConfigDict every stage starts from; each stage file
changes what the paper changes. Presets: `so400m` (the paper), `base`, `tiny` (2-core CPU).

Data: `config.data` holds what every task of the stage shares (`data(stage, preset)`), and
each `config.tasks.<task>.data` only what that task changes (`tasks(...)`): its batch shape
(batch_rows, row_len, max_samples_per_row), its sources (() = config.data.sources) and its real
differences (understanding: no flips, 1 FPS clips, captions required). From the command line:

  --config.data.num_workers=4                     stage-wide: every task
  --config.tasks.video_recon.data.row_len=8192    one task: only the fields its data lists
  --config.tasks.image_recon.data.sources="('tfds:imagenet2012',)"

A per-task value of a field that task's data does not list goes in a config file
(`c.tasks.video_recon.data.video = dict(max_side=256)`); the command line refuses it in one line
naming the stage-wide spelling. `data_pipelines.config.resolve_task(config, name)` gives the
task's full data config.
"""
import math

import ml_collections
from ml_collections import config_dict

from atoken_jax import config as config_lib


def base(preset: str) -> ml_collections.ConfigDict:
  tiny = preset == "tiny"
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.total_steps = 200_000
  c.log_every = 5 if tiny else 50
  c.ckpt_every = 500 if tiny else 2_000
  c.image_every = 100 if tiny else 1_000  # original | reconstruction to TensorBoard (0 = off)
  c.eval_every = 0  # run `eval_config` (an `atoken eval` config, FILE[:arg]) every N steps
  c.eval_config = ""
  c.keep = 3
  c.keep_every = 0 if tiny else 50_000
  c.async_checkpoints = True
  c.max_consecutive_nonfinite = 20
  c.peak_flops_per_device = 0.0  # 0 = look the device kind up in a table

  # The model section is the ModelConfig itself (every field settable: --config.model.x=v).
  # tiny: one wide block per trunk, not the test preset's two narrow ones; at this budget it
  # learns several dB faster (bench/RESULTS.md, "Held-out reconstruction vs PCA")
  trunks = dict(encoder=config_lib.TrunkConfig(96, 1, 3, 192),
                decoder=config_lib.TrunkConfig(96, 1, 3, 192)) if tiny else {}
  c.model = ml_collections.ConfigDict(config_lib.model_config_to_dict(config_lib.model_config(
      preset, latent_dim=32, scan_layers=not tiny, remat="none" if tiny else "dots",
      dtype="float32" if tiny else "bfloat16", attention_impl="auto", **trunks)))
  c.init = ml_collections.ConfigDict(dict(
      siglip2="",          # a Hugging Face SigLIP2 directory or .safetensors (stage 1)
      previous_stage="",   # the previous stage's workdir (stages 2-4)
      previous_step=-1,    # -1 = its newest checkpoint
      use_ema=True))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.distributed = ml_collections.ConfigDict(dict(
      mode="none",  # "auto" on TPU pods and SLURM, "explicit" with the fields below
      coordinator_address=config_dict.placeholder(str), num_processes=1, process_id=0,
      local_device_ids=()))

  # L = rec * L_rec + sem * L_sem + kl * L_KL; L_rec = l1*L1 + lpips*LPIPS + gram*Gram + clip*CLIP
  c.loss = ml_collections.ConfigDict(dict(
      rec=0.2, sem=1.0, kl=1e-8, l1=1.0, lpips=10.0, gram=1e3, clip=1.0,
      # perceptual terms on each image resized to perceptual_size^2 (paper: 224); images up to
      # perceptual_max_side px fit the static canvas
      perceptual_size=64 if tiny else 224, perceptual_max_side=256 if tiny else 512,
      lpips_net="alex" if tiny else "vgg",
      lpips_weights="",    # LPIPS trunk + linear layers (tools/convert_lpips_weights.py)
      teacher="",          # frozen SigLIP2 vision tower (HF directory or .safetensors)
      text_tower="",       # frozen SigLIP2 text tower (HF directory or .safetensors)
      text_embeddings_in_batch=False,  # True: the data pipeline precomputes text embeddings
      distill_temperature=2.0, distill_axis="texts",
      distill_logit_scale=4.8438,  # SigLIP2's (log-space), as ml-atoken hard-codes it
      siglip_scale_init=math.log(10.0), siglip_bias_init=-10.0))

  if tiny:
    # No term against a frozen network without its real weights (a random one adds noise, no
    # signal): the tiny job trains L1 + KL; set loss.lpips_weights / teacher / text_tower and
    # the weights to turn the perceptual and semantic terms on.
    c.loss.update(lpips=0.0, gram=0.0, clip=0.0, sem=0.0)
  c.optim = ml_collections.ConfigDict(dict(
      lr=3e-4, end_lr=3e-5, warmup_steps=2_000, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
      encoder_lr_mult=0.1, clip_norm=1.0, ema_decay=0.9999))
  if tiny:  # a short run from scratch: high LR, short warm-up, the encoder at the full LR
    c.optim.update(lr=5e-3, end_lr=5e-4, warmup_steps=20, encoder_lr_mult=1.0,
                   ema_decay=0.0)  # 0: the EMA is the trained parameters (no lag)
  from atoken_jax.train import heldout  # pylint: disable=import-outside-toplevel
  # held-out PSNR/SSIM vs PCA on the bundled data at the end of the run (bundled data only)
  c.heldout_report = heldout.default_config(enabled=tiny)
  c.tasks = ml_collections.ConfigDict()
  # A sweep: a list of flattened override dicts; `atoken sweep` prints or launches one run each.
  c.sweep = [{"optim.lr": 1e-3}, {"optim.lr": 3e-3}] if tiny else []
  return c


def data(stage: int, preset: str) -> ml_collections.ConfigDict:
  """The stage-wide data defaults (`config.data`) of the data pipeline for this stage."""
  from data_pipelines import config as data_config  # pylint: disable=import-outside-toplevel
  return data_config.stage_defaults(stage, "tiny" if preset == "tiny" else "paper")


def tasks(stage: int, preset: str, accum_steps: dict) -> ml_collections.ConfigDict:
  """{task name: {accum_steps, data}} for the round-robin schedule; each task's data is what it
  changes of `data(stage, preset)` (override from the command line, e.g.
  --config.tasks.image_recon.data.sources="('folder:/data/imgs',)")."""
  from data_pipelines import config as data_config  # pylint: disable=import-outside-toplevel
  data_preset = "tiny" if preset == "tiny" else "paper"
  out = ml_collections.ConfigDict()
  for name, accum in accum_steps.items():
    if preset == "tiny" and name.endswith("_understand"):
      accum = 0  # its semantic loss needs the real SigLIP2 towers (set them, then accum_steps)
    task_data = data_config.task_overrides(name, stage, data_preset)
    if preset == "tiny" and name == "image_recon":
      # 64-128 px: close to the 128 px the held-out report scores
      task_data.image = ml_collections.ConfigDict(dict(min_side=64))
    if preset == "tiny" and name == "video_recon":
      # 64-96 px at frame strides 1-2: close to the 96 px clips at their own frame rate the
      # held-out report scores (stride 12 spans 36 frames of these 24-48 frame clips)
      task_data.video = ml_collections.ConfigDict(dict(min_side=64, strides=(1, 2)))
    out[name] = ml_collections.ConfigDict(dict(accum_steps=accum, data=task_data))
  return out
