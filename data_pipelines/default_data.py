"""The bundled default dataset: real photographs, procedural videos and procedural 3D assets.

Built on first use into `$ATOKEN_DATA_CACHE` (default `~/.cache/atoken_jax/default_data`) with
the same writer as `atoken data prepare`, and read through the same pipeline as a user's data:

  image/   the photographs that ship inside scikit-image (`skimage.data`: astronaut, coffee,
           chelsea the cat, a rocket launch, the Hubble deep field, ...), greyscale ones as RGB,
           each with a one-line caption;
  video/   camera pans and zooms over those photographs (24-48 frames, H.264 mp4, 24 fps);
  voxels/  coloured trimesh primitives (box, sphere, cylinder, cone, capsule, torus),
           rendered from 16 views by our rasteriser and voxelised (spec §1.3);
  heldout/ the held-out split, image/ video/ voxels/ alike: the photographs in
           `HELDOUT_PHOTOS` (and clips over them) and the shapes in `HELDOUT_SHAPES`. Nothing
           of it is in the training directories above, which the source spec "default" reads;
           "default:heldout" reads it (for evaluation only).

A few seconds on 2 cores; a lock file makes concurrent first uses build it once; it is built
beside the cache folder and swapped in complete (`dataset_dir.DatasetBuilder`).
"""
from __future__ import annotations

import fcntl
import json
import os

import numpy as np
from PIL import Image

from data_pipelines import assets3d, dataset_dir, writers
from data_pipelines.arrayrecord_io import ShardWriter

VERSION = 2
# (skimage.data function, caption)
PHOTOS = (
    ("astronaut", "an astronaut in a white spacesuit in front of an american flag"),
    ("coffee", "a cup of coffee on a saucer with a spoon, seen from above"),
    ("chelsea", "a ginger tabby cat looking to the side"),
    ("rocket", "a rocket lifting off from a launch pad under a blue sky"),
    ("hubble_deep_field", "thousands of galaxies in the hubble deep field"),
    ("immunohistochemistry", "a stained tissue sample under a microscope"),
    ("retina", "a photograph of the back of a human eye with blood vessels"),
    ("colorwheel", "a circular colour wheel with all hues"),
    ("camera", "a man with a camera on a tripod, black and white"),
    ("brick", "a brick wall, black and white texture"),
    ("grass", "a close-up of grass, black and white texture"),
    ("gravel", "gravel stones, black and white texture"),
    ("moon", "the surface of the moon with craters"),
    ("coins", "old coins on a dark background"),
    ("clock", "a wall clock photographed at an angle"),
    ("page", "a scanned page of printed text"),
    ("text", "hand-written and printed text on a light background"),
)
SHAPES = (
    ("box", "a red box with square faces"),
    ("icosphere", "a smooth sphere with a rainbow gradient"),
    ("cylinder", "a blue cylinder standing upright"),
    ("cone", "a yellow cone with a round base"),
    ("capsule", "a green capsule with rounded ends"),
    ("torus", "an orange torus shaped like a ring"),
)
# The held-out split: never written into the training directories (tests/test_data_default.py).
HELDOUT_PHOTOS = ("chelsea", "coffee")
HELDOUT_SHAPES = ("capsule",)
HELDOUT = "heldout"
TRAIN_CLIPS = 8  # clips over the first 8 training photos


def split(items: tuple, heldout: tuple[str, ...], part: str) -> tuple:
  """The (name, caption) pairs of `items` in `part` ("train" or "heldout")."""
  if part not in ("train", HELDOUT):
    raise ValueError(f"part must be 'train' or {HELDOUT!r}, got {part!r}")
  return tuple(it for it in items if (it[0] in heldout) == (part == HELDOUT))


def default_cache_dir() -> str:
  return os.environ.get("ATOKEN_DATA_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "atoken_jax", "default_data")


def _photo(name: str) -> np.ndarray:
  import skimage.data  # pylint: disable=import-outside-toplevel
  x = np.asarray(getattr(skimage.data, name)())
  if x.ndim == 2:
    x = np.repeat(x[..., None], 3, axis=2)
  return np.ascontiguousarray(x[..., :3].astype(np.uint8))


def _camera_path(photo: np.ndarray, rng: np.random.Generator, frames: int, out_hw) -> np.ndarray:
  """A pan or a zoom over `photo`: [frames, h, w, 3] uint8."""
  h, w = photo.shape[:2]
  oh, ow = out_hw
  img = Image.fromarray(photo)
  zoom = rng.random() < 0.5
  crop0 = min(h / oh, w / ow) * (0.9 if zoom else 0.6)  # crop size in units of the output
  crop1 = crop0 * (0.55 if zoom else 1.0)
  start = rng.random(2)
  end = start if zoom else rng.random(2)
  out = []
  for t in np.linspace(0.0, 1.0, frames):
    s = crop0 + (crop1 - crop0) * t
    ch, cw = oh * s, ow * s
    cy, cx = (start + (end - start) * t) * [h - ch, w - cw]
    box = (cx, cy, cx + cw, cy + ch)
    out.append(np.asarray(img.resize((ow, oh), Image.BILINEAR, box=box)))
  return np.stack(out)


def _shape(name: str, rng: np.random.Generator):
  import trimesh  # pylint: disable=import-outside-toplevel

  make = {
      "box": lambda: trimesh.creation.box(extents=(1.0, 0.8, 0.6)),
      "icosphere": lambda: trimesh.creation.icosphere(subdivisions=3),
      "cylinder": lambda: trimesh.creation.cylinder(radius=0.3, height=1.0, sections=32),
      "cone": lambda: trimesh.creation.cone(radius=0.5, height=1.0, sections=32),
      "capsule": lambda: trimesh.creation.capsule(height=0.6, radius=0.25, count=(16, 16)),
      "torus": lambda: trimesh.creation.torus(major_radius=0.4, minor_radius=0.12,
                                              major_sections=32, minor_sections=12),
  }
  mesh = make[name]()
  v = np.asarray(mesh.vertices)
  base = {"box": (0.85, 0.15, 0.1), "cylinder": (0.15, 0.3, 0.85), "cone": (0.9, 0.8, 0.1),
          "capsule": (0.2, 0.75, 0.25), "torus": (0.95, 0.5, 0.1)}.get(name)
  if base is None:  # rainbow gradient over the vertices
    colors = (v - v.min(0)) / np.maximum(np.ptp(v, axis=0), 1e-9)
  else:  # the base colour with a little per-vertex variation
    colors = np.clip(np.asarray(base) + rng.normal(0, 0.05, (len(v), 3)), 0, 1)
  return v, np.asarray(mesh.faces), colors


def _write_part(out_dir: str, photos: tuple, shapes: tuple, clips: int,
                rng: np.random.Generator, seed: int) -> dict:
  counts = {}
  with ShardWriter(os.path.join(out_dir, "image")) as w:
    for name, caption in photos:
      fmt = "PNG" if name in ("colorwheel", "text", "page") else "JPEG"
      w.write(writers.image_record(f"skimage:{name}", writers.encode_image(_photo(name), fmt),
                                   caption))
    counts["image"] = w.num_records
  sizes = ((96, 128), (128, 128), (144, 192), (112, 160))
  with ShardWriter(os.path.join(out_dir, "video")) as w:
    for i, (name, caption) in enumerate(photos[:clips]):
      frames = _camera_path(_photo(name), rng, int(rng.integers(24, 49)), sizes[i % len(sizes)])
      w.write(writers.video_record(f"procedural:{name}", writers.encode_video(frames),
                                   f"a slow camera move over {caption}"))
    counts["video"] = w.num_records
  with ShardWriter(os.path.join(out_dir, "voxels")) as w:
    for name, caption in shapes:
      i = [n for n, _ in SHAPES].index(name)
      v, f, colors = _shape(name, rng)
      asset = assets3d.mesh_to_asset(v, f, vertex_colors=colors, seed=seed + i)
      w.write(writers.voxel_record(f"primitive:{name}", asset, caption))
    counts["voxels"] = w.num_records
  return counts


_MANIFEST = {"version": VERSION, "source": "atoken_jax default data"}


def build_default_dataset(out_dir: str, seed: int = 0) -> dict:
  """Writes the dataset into `out_dir` (image/, video/, voxels/, heldout/, manifest.json);
  returns the counts of the training part."""
  counts = _write_shards(out_dir, seed)
  dataset_dir.write_manifest(out_dir, _MANIFEST, counts)
  return counts


def _write_shards(out_dir: str, seed: int) -> dict:
  """The training part's shards in `out_dir`, the held-out part as a dataset folder of its own
  (its shards and manifest) in `out_dir/heldout`; -> the training part's counts."""
  rng = np.random.default_rng(seed)
  counts = _write_part(out_dir, split(PHOTOS, HELDOUT_PHOTOS, "train"),
                       split(SHAPES, HELDOUT_SHAPES, "train"), TRAIN_CLIPS, rng, seed)
  held = os.path.join(out_dir, HELDOUT)
  heldout = _write_part(held, split(PHOTOS, HELDOUT_PHOTOS, HELDOUT),
                        split(SHAPES, HELDOUT_SHAPES, HELDOUT), len(HELDOUT_PHOTOS), rng, seed)
  dataset_dir.write_manifest(held, _MANIFEST, heldout)
  return counts


def ensure_default_dataset(cache_dir: str | None = None) -> str:
  """The path of the bundled dataset, building it first if needed (process-safe)."""
  path = os.path.abspath(cache_dir or default_cache_dir())
  manifest = os.path.join(path, "manifest.json")

  def ready() -> bool:
    try:
      with open(manifest) as fh:
        return json.load(fh).get("version") == VERSION
    except (OSError, ValueError):
      return False

  if ready():
    return path
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  with open(path + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if not ready():  # built beside `path`, swapped in complete (see dataset_dir)
        with dataset_dir.DatasetBuilder(path, overwrite=True) as builder:
          builder.commit(_MANIFEST, _write_shards(builder.path, seed=0))
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return path
