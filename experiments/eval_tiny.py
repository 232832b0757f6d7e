"""Every eval kind on small local folders, with random feature networks and a random tiny text
tower: a CPU smoke test of the whole pipeline (the numbers mean nothing).

  atoken eval --config=experiments/eval_tiny.py:/path/to/root --checkpoint=random:tiny

ROOT holds images/ (any images), videos/ (mp4 files), classes/<class>/ (images),
captioned/ (images with sidecar .txt captions), captioned_videos/ (videos + .txt) and
shapes/<class>/ (.npz voxel sets with coords [N, 3] and feats [N, 768]). Disable a task with
--config.tasks.NAME.enabled=False.
"""
import os

from experiments import eval_common as ec


def get_config(root: str = "eval_data"):
  c = ec.base()
  c.name = "tiny"
  c.batch_size = 4
  c.features.update(dict(inception="random", i3d="random", lpips="random", lpips_net="alex",
                         inception_dims=64, inception_batch=2, i3d_batch=1))
  c.text.update(dict(random_preset="tiny", tokenizer="bytes"))
  c.visuals.update(dict(images=4, videos=1, video_format="gif", fps=4))
  d = lambda sub, **kw: ec.data(folder=os.path.join(root, sub), **kw)
  c.tasks.images = dict(kind="image_recon", title="Images", size=64, enabled=True,
                        protocol="resize_center_crop", resample="bicubic", data=d("images"))
  c.tasks.videos = dict(kind="video_recon", title="Videos", num_frames=8, fvd_clip=8,
                        max_side=64, enabled=True, data=d("videos"))
  c.tasks.classes = dict(kind="zero_shot", title="Classes", size=32, protocol="resize",
                         enabled=True, templates=["a photo of a {}."], data=d("classes"))
  c.tasks.captions = dict(kind="image_text_retrieval", title="Captions", size=32,
                          protocol="resize", enabled=True, data=d("captioned"))
  c.tasks.video_captions = dict(kind="video_text_retrieval", title="VideoCaptions", size=32,
                                num_frames=4, frame_mode="video_pad", enabled=True,
                                data=d("captioned_videos"))
  c.tasks.shapes = dict(kind="zero_shot_3d", title="Shapes", enabled=True,
                        templates=["a 3D model of a {}."], data=d("shapes"))
  return c
