"""The paper's evaluations (notes §6-§7): Tables 4-8 protocols on the standard datasets.

  atoken eval --config=experiments/eval_paper.py:image --checkpoint=$CKPT \\
      --config.features.inception=$FID_PTH --config.features.lpips_backbone=$ALEXNET_PTH
  atoken eval --config=experiments/eval_paper.py:video --checkpoint=$CKPT \\
      --config.tasks.davis.data.folder=$DAVIS --config.tasks.tokenbench.data.folder=$TB
  atoken eval --config=experiments/eval_paper.py:understanding --checkpoint=$CKPT \\
      --config.text.checkpoint=$SIGLIP2 --config.text.tokenizer=$GEMMA_SPM \\
      --config.tasks.imagenet_zero_shot.data.classnames=$IMAGENET_CLASSNAMES_TXT

ARG: comma-separated groups of image | video | understanding | 3d (default: all). ImageNet and
COCO come from TFDS (prepared as ArrayRecord); DAVIS, TokenBench, Flickr30k, MSR-VTT and Toys4k
from folders the user points to (they are not in TFDS). TFDS ImageNet labels are synset ids:
give class names (one per line, label order) for zero-shot.
"""
from experiments import eval_common as ec


def get_config(arg: str = "image,video,understanding,3d"):
  groups = set(arg.split(","))
  c = ec.base()
  c.features.inception = "pt_inception-2015-12-05-6726825d.pth"
  t = c.tasks
  if "image" in groups:  # Table 4: 256x256, resize + centre crop
    t.imagenet = dict(kind="image_recon", title="ImageNet", size=256,
                      protocol="resize_center_crop", resample="bicubic",
                      data=ec.data(tfds="imagenet2012", split="validation"))
    t.coco = dict(kind="image_recon", title="COCO", size=256, protocol="resize_center_crop",
                  resample="bicubic", data=ec.data(tfds="coco/2017", split="validation"))
  if "video" in groups:  # Table 6: native resolution (multiples of 16), temporal tiles
    t.davis = dict(kind="video_recon", title="DAVIS", num_frames=16, fvd_clip=16, max_side=0,
                   data=ec.data(folder="DAVIS_1080p_videos"))
    t.tokenbench = dict(kind="video_recon", title="TokenBench", num_frames=16, fvd_clip=16,
                        max_side=0, data=ec.data(folder="TokenBench_720p_videos"))
  if "understanding" in groups:  # Tables 5 and 7, at 256 (256 tokens) / 224 for video
    t.imagenet_zero_shot = dict(kind="zero_shot", title="ImageNet", size=256, protocol="resize",
                                templates=list(ec.TEMPLATES),
                                data=ec.data(tfds="imagenet2012", split="validation"))
    t.imagenet_v2_zero_shot = dict(kind="zero_shot", title="ImageNet-v2", size=256,
                                   protocol="resize", templates=list(ec.TEMPLATES),
                                   data=ec.data(tfds="imagenet_v2", split="test"))
    t.coco_retrieval = dict(kind="image_text_retrieval", title="COCO", size=256,
                            protocol="resize", data=ec.data(
                                tfds="coco_captions", split="test", caption_key="captions/text"))
    t.flickr_retrieval = dict(kind="image_text_retrieval", title="Flickr30k", size=256,
                              protocol="resize", data=ec.data(folder="flickr30k_test"))
    t.msrvtt = dict(kind="video_text_retrieval", title="MSRVTT-1K-A", size=224, num_frames=8,
                    frame_mode="video_pad", data=ec.data(folder="msrvtt_1k_a"))
  if "3d" in groups:  # Table 8: Toys4k zero-shot
    t.toys4k = dict(kind="zero_shot_3d", title="Toys4k", num_views=150,
                    templates=list(ec.TEMPLATES), data=ec.data(folder="toys4k"))
  return c
