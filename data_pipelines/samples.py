"""One stream element -> token samples: decode, transform, caption, tokenise, fit to a row.

`SampleFn` is the Grain `random_map` of a task's pipeline. It takes a tagged element
(record_id, modality, raw) -- raw being record bytes, a record dict, or an error dict from a
source -- and a per-element `np.random.Generator`, and returns a `Processed`: zero or more
`Sample`s (a video longer than a row becomes several clips) and, for unusable input, the reason
and name. It never raises for bad input.

Samples longer than the row (L tokens): videos are cut into clips of whole temporal tiles
(`long="split"`, t restarts at 0 per clip, like the model's own tiles), or cut to the first clip
("truncate"), or dropped ("drop"); images are resized to fit (see `transforms`); voxel sets are
dropped or randomly subsampled ("subsample"). Every such event is counted in `notes`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from atoken_jax.config import PATCH_HW, PATCH_T
from atoken_jax.tokens import TokenSeq, Voxels, to_tokens
from data_pipelines import decode, decoded_cache, records, text, transforms, voxelize
from data_pipelines.config import MODALITY_IDS, TASK_IDS

MODALITIES = {v: k for k, v in MODALITY_IDS.items()}


@dataclasses.dataclass(eq=False)
class Sample:
  """One packable sample.

  Attributes:
    tokens: its `TokenSeq` (n <= L tokens).
    modality: 0 image, 1 video, 2 voxels. task: 0 reconstruction, 1 understanding.
    text_ids: [text_len] int32 caption ids (0 = pad). has_text: a caption was present.
    orig_shape: (T, H, W) after crop (T = real frames of this clip); (0, 0, 0) for voxels.
    record_id: index of the record in its source.
  """
  tokens: TokenSeq
  modality: int
  task: int
  text_ids: np.ndarray
  has_text: bool
  orig_shape: tuple
  record_id: int


@dataclasses.dataclass(eq=False)
class Processed:
  """What one element became: samples, or a bad-data (reason, name, message)."""
  samples: list
  bad: Optional[tuple] = None
  notes: dict = dataclasses.field(default_factory=dict)


def _caption(raw_caption: Any, rng: np.random.Generator) -> str:
  if isinstance(raw_caption, bytes):
    raw_caption = raw_caption.decode("utf-8", errors="replace")
  if isinstance(raw_caption, (list, tuple, np.ndarray)):
    options = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
               for c in raw_caption]
    options = [c for c in options if c.strip()]
    return options[int(rng.integers(len(options)))] if options else ""
  return raw_caption.strip() if isinstance(raw_caption, str) else ""


class SampleFn:
  """Grain random_map: (record_id, modality, raw), rng -> `Processed`. Picklable."""

  def __init__(self, cfg):
    """cfg: a task config (see `config.default_task_config`)."""
    self.task = TASK_IDS[cfg.task]
    self.row_len = int(cfg.row_len)
    self.image_cfg, self.video_cfg, self.voxel_cfg = cfg.image, cfg.video, cfg.voxels
    self.text_required = bool(cfg.text.required)
    self.tokenizer = text.make_tokenizer(cfg.text.tokenizer, int(cfg.text.text_len))
    cache_mb = float(cfg.get("decoded_cache_mb", 0))
    self._decoded = (decoded_cache.DecodedCache(int(cache_mb * 2 ** 20)) if cache_mb > 0
                     else None)  # per worker: it pickles empty

  def __call__(self, element, rng: np.random.Generator) -> Processed:
    record_id, modality, raw = element
    name = f"record {record_id}"
    try:
      record = records.decode_record(raw) if isinstance(raw, (bytes, bytearray)) else raw
      if not isinstance(record, dict):
        raise decode.BadData("decode_error", f"unexpected element {type(record).__name__}")
      name = str(record.get("name") or name)
      if record.get("kind") == "error":
        raise decode.BadData("unreadable", str(record.get("error", "")))
      caption = _caption(record.get("caption"), rng)
      if self.text_required and not caption:
        raise decode.BadData("missing_caption", "the task needs a caption")
      notes: dict = {}
      if modality == "image":
        seqs = self._image(record, rng)
      elif modality == "video":
        seqs = self._video(record, rng, notes)
      else:
        seqs = self._voxels(record, rng, notes)
    except records.RecordError as e:
      return Processed([], ("corrupt_record", name, str(e)))
    except decode.BadData as e:
      if e.reason == "too_long":  # usable data that does not fit a row: a note, not bad data
        return Processed([], None, {"dropped_too_long": 1})
      return Processed([], (e.reason, name, e.message))
    except Exception as e:  # noqa: BLE001 - bad input must be a counted skip, never a crash
      return Processed([], ("decode_error", name, f"{type(e).__name__}: {e}"))
    if any(len(seq) > self.row_len for seq, _ in seqs):  # e.g. a 1 x 10000 px image
      return Processed([], None, {"dropped_too_long": 1})
    ids = self.tokenizer.encode(caption) if caption else np.zeros(
        self.tokenizer.text_len, np.int32)
    samples = [Sample(tokens=s, modality=MODALITY_IDS[modality], task=self.task, text_ids=ids,
                      has_text=bool(caption), orig_shape=shape, record_id=int(record_id))
               for s, shape in seqs]
    return Processed(samples, None, notes)

  # ------------------------------------------------------------------ per modality

  def _image(self, record, rng):
    made = []

    def size_for(height, width):  # drawn from the header size, before decoding
      made.append(transforms.FrameTransform(rng, height, width, self.image_cfg,
                                            max_tokens=self.row_len))
      return made[0].size

    img = decode.decode_image(record, size_for, self._decoded)
    pixels = made[0](img)
    return [(to_tokens(pixels), (1,) + pixels.shape[:2])]

  def _video(self, record, rng, notes):
    cfg = self.video_cfg

    def choose(total, fps):
      if cfg.fps > 0:
        return transforms.fps_frame_indices(total, fps, cfg.fps, int(cfg.max_frames))
      return transforms.stride_frame_indices(rng, total, cfg.strides, int(cfg.max_frames))

    frames, _ = decode.video_frames(record, choose, self._decoded)
    h, w = frames[0].shape[:2]
    if h == 0 or w == 0:
      raise decode.BadData("empty_image", f"frame size {h}x{w}")
    fn = transforms.FrameTransform(rng, h, w, cfg, max_tokens=self.row_len)
    clip = np.stack([fn(f) for f in frames])  # [T, h16, w16, 3], T a multiple of 4
    per_latent_frame = (clip.shape[1] // PATCH_HW) * (clip.shape[2] // PATCH_HW)
    latent_frames = clip.shape[0] // PATCH_T
    if per_latent_frame * latent_frames <= self.row_len:
      pieces = [clip]
    else:
      fit = self.row_len // per_latent_frame  # latent frames per row
      fit = fit // PATCH_T * PATCH_T or fit  # whole temporal tiles when possible
      if cfg.long == "drop" or fit == 0:
        raise decode.BadData("too_long", f"{per_latent_frame * latent_frames} tokens > "
                             f"row_len {self.row_len}")
      step = fit * PATCH_T
      pieces = [clip[i:i + step] for i in range(0, len(clip), step)]
      if cfg.long == "truncate":
        notes["truncated"] = 1
        pieces = pieces[:1]
      else:
        notes["split_pieces"] = len(pieces) - 1
    return [(to_tokens(p), p.shape[:3]) for p in pieces]

  def _voxels(self, record, rng, notes):
    cfg = self.voxel_cfg
    asset = decode.voxel_asset(record, int(cfg.num_views), seed=int(rng.integers(1 << 31)))
    if len(asset.coords) == 0:
      raise decode.BadData("no_voxels", "empty voxel set")
    feats = voxelize.voxel_feats(asset.src, asset.views)
    coords = np.asarray(asset.coords).astype(np.int32)
    limit = int(cfg.max_voxels) or self.row_len
    limit = min(limit, self.row_len)
    if len(coords) > limit:
      if cfg.long != "subsample":
        raise decode.BadData("too_long", f"{len(coords)} voxels > limit {limit}")
      keep = np.sort(rng.choice(len(coords), limit, replace=False))
      coords, feats = coords[keep], feats[keep]
      notes["subsampled"] = 1
    return [(to_tokens(Voxels(coords=coords, feats=feats)), (0, 0, 0))]
