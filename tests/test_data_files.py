"""Real test files for the data-pipeline tests (Pillow images, PyAV videos, trimesh meshes, and a
corrupt file of each kind), plus checks that the makers produce what they claim."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from data_pipelines import decode, writers

GOOD_IMAGES = 12
GOOD_VIDEOS = 3


def _photo(rng, h, w):
  """A smooth random picture (gradients + blobs), uint8 [h, w, 3]."""
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  base = np.stack([np.sin(6 * x + rng.uniform(0, 6)), np.cos(5 * y + rng.uniform(0, 6)),
                   np.sin(4 * (x + y))], -1)
  return ((base * 0.5 + 0.5) * 255).astype(np.uint8)


def make_images(root, rng):
  """GOOD_IMAGES images (png/jpg/webp, RGB/RGBA/L), captions for every other one, + 2 bad."""
  os.makedirs(root, exist_ok=True)
  for i in range(GOOD_IMAGES):
    h, w = int(rng.integers(40, 200)), int(rng.integers(40, 200))
    img = Image.fromarray(_photo(rng, h, w))
    if i % 4 == 1:
      img = img.convert("RGBA")
    elif i % 4 == 2:
      img = img.convert("L")
    ext = ("png", "jpg", "webp")[i % 3] if i % 4 != 1 else "png"
    img.save(os.path.join(root, f"img_{i:02d}.{ext}"))
    if i % 2 == 0:
      with open(os.path.join(root, f"img_{i:02d}.txt"), "w") as fh:
        fh.write(f"a picture number {i}")
  jpeg = io.BytesIO()
  Image.fromarray(_photo(rng, 64, 64)).save(jpeg, "JPEG")
  with open(os.path.join(root, "broken.jpg"), "wb") as fh:
    fh.write(jpeg.getvalue()[:120])  # truncated
  open(os.path.join(root, "empty.png"), "wb").close()


def make_videos(root, rng, frames=(12, 16, 20)):
  """GOOD_VIDEOS mp4s (moving gradients) + a 3-frame video + a corrupt file."""
  os.makedirs(root, exist_ok=True)
  for i, t in enumerate(frames):
    base = _photo(rng, 64, 96)
    clip = np.stack([np.roll(base, 3 * k, axis=1)[:48, :64] for k in range(t)])
    with open(os.path.join(root, f"vid_{i}.mp4"), "wb") as fh:
      fh.write(writers.encode_video(clip, fps=8))
    with open(os.path.join(root, f"vid_{i}.txt"), "w") as fh:
      fh.write(f"a moving pattern {i}")
  short = np.stack([_photo(rng, 32, 32)] * 3)
  with open(os.path.join(root, "short.mp4"), "wb") as fh:
    fh.write(writers.encode_video(short, fps=8))
  with open(os.path.join(root, "broken.mp4"), "wb") as fh:
    fh.write(b"\x00\x00\x00\x18ftypmp42" + rng.bytes(500))


def make_meshes(root):
  """A box (.obj) and a cone (.ply) + a corrupt .glb + an .obj without faces."""
  import trimesh
  os.makedirs(root, exist_ok=True)
  box = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
  box.visual.face_colors = np.tile([200, 30, 30, 255], (len(box.faces), 1))
  box.export(os.path.join(root, "box.obj"))
  trimesh.creation.cone(radius=0.5, height=1.0, sections=16).export(
      os.path.join(root, "cone.ply"))
  with open(os.path.join(root, "broken.glb"), "wb") as fh:
    fh.write(b"glTF" + b"\x02\x00\x00\x00" + b"\xff" * 40)
  with open(os.path.join(root, "nofaces.obj"), "w") as fh:
    fh.write("v 0 0 0\nv 1 0 0\nv 0 1 0\n")


def make_folder(root, seed=0):
  """A mixed folder: images/, videos/, meshes/ as above."""
  rng = np.random.default_rng(seed)
  make_images(os.path.join(root, "images"), rng)
  make_videos(os.path.join(root, "videos"), rng)
  make_meshes(os.path.join(root, "meshes"))
  return str(root)


def test_made_images_decode_and_bad_ones_do_not(tmp_path):
  make_images(tmp_path, np.random.default_rng(0))
  names = sorted(os.listdir(tmp_path))
  for name in names:
    if name.endswith(".txt"):
      continue
    record = {"kind": "image", "bytes": open(tmp_path / name, "rb").read()}
    if name in ("broken.jpg", "empty.png"):
      with pytest.raises(decode.BadData):
        decode.decode_image(record)
    else:
      assert decode.decode_image(record).mode == "RGB"


def test_made_videos_decode_with_their_frame_counts(tmp_path):
  make_videos(tmp_path, np.random.default_rng(0))
  for i, t in enumerate((12, 16, 20)):
    record = {"kind": "video", "bytes": open(tmp_path / f"vid_{i}.mp4", "rb").read()}
    frames, fps = decode.video_frames(record, lambda total, fps: list(range(total)))
    assert len(frames) == t and frames[0].shape == (48, 64, 3) and fps == 8
  with pytest.raises(decode.BadData):
    decode.video_frames({"kind": "video", "bytes": open(tmp_path / "broken.mp4", "rb").read()},
                        lambda total, fps: [0])
