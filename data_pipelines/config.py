"""Data configuration: stage-wide defaults, sparse per-task overrides, the stage mixtures.

A task's data config says where samples come from, how they are transformed at a curriculum
stage, and the static batch shape [B = batch_rows, L = row_len] with S = max_samples_per_row
slots per row. It is two parts merged (`merge`):

  stage_defaults(stage, preset)         what every task of a stage shares (an experiment
                                        config's `config.data`)
  task_overrides(name, stage, preset)   what one task changes: its batch shape, its sources
                                        (() = the stage's) and its real differences
                                        (`config.tasks.<name>.data`)

`resolve_task(cfg, name)` gives an experiment task's full config (also for configs saved before
`config.data` existed); `default_task_config(name, stage, preset)` the full default one.

Source specs (`sources`, a tuple; parts are mixed by `weights`, default proportional to size):
  "default"            the bundled dataset's training split (built on first use, see
                       `default_data.py`); "default:heldout" its held-out split (eval only)
  "arrayrecord:PATH"   a prepared directory (PATH/<modality>/*.array_record) or shard glob
  "folder:PATH"        a folder of images / videos / meshes / NeRF renders (+ .txt captions)
  "tfds:NAME[:SPLIT]"  a TFDS dataset in `tfds.data_dir` (ArrayRecord format; NAME may also be
                       the path of a prepared TFDS dataset version directory)

Paper facts used below (paper notes §1, §5): per-stage maximum side (image 512 / 1024 / 2048,
video 512 / 1024, minimum 64), reconstruction clips of up to 32 frames at stride 1-12,
understanding at 1 FPS up to 64 frames, and the stage task ratios.
"""
from __future__ import annotations

import difflib

import ml_collections

from atoken_jax.tokens import MODALITY_IDS, TASK_IDS  # noqa: F401 (per-slot codes, re-exported)

TASKS = ("image_recon", "image_understand", "video_recon", "video_understand", "voxels_recon",
         "voxels_understand")

# Paper Table 2: maximum side per stage (the minimum is 64 everywhere).
IMAGE_MAX_SIDE = {1: 512, 2: 1024, 3: 2048, 4: 2048}
VIDEO_MAX_SIDE = {1: 512, 2: 512, 3: 1024, 4: 1024}
# Paper Table 2 task ratios I^r / V^u / V^r / 3D^u / 3D^r. Image understanding (distillation)
# is not part of the ratios: the paper runs it in every stage (batch 8192, grad accumulation).
STAGE_RATIOS = {
    1: {"image_recon": 100.0},
    2: {"image_recon": 22.2, "video_understand": 11.1, "video_recon": 66.6},
    3: {"image_recon": 22.2, "video_understand": 11.1, "video_recon": 44.4,
        "voxels_understand": 11.1, "voxels_recon": 11.1},
}
STAGE_RATIOS[4] = dict(STAGE_RATIOS[3])

# Per-process batch shape per preset: (B rows, L tokens per row, S slots per row).
_SHAPES = {
    "paper": {"image": (2, 16384, 128), "video": (2, 16384, 64), "voxels": (2, 32768, 8)},
    "tiny": {"image": (2, 256, 16), "video": (2, 256, 16), "voxels": (2, 2048, 2)},
}


# Fields every task sets (its batch shape [B, L] and S); any other field of a task's data
# overrides one of the stage's defaults.
PER_TASK = ("batch_rows", "row_len", "max_samples_per_row")


def _split(name: str) -> tuple[str, str]:
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; expected one of {TASKS}")
  modality, kind = name.split("_")
  return modality, "reconstruction" if kind == "recon" else "understanding"


def _check(stage: int, preset: str) -> None:
  if stage not in IMAGE_MAX_SIDE:
    raise ValueError(f"stage must be 1-4, got {stage}")
  if preset not in _SHAPES:
    raise ValueError(f"preset must be one of {tuple(_SHAPES)}, got {preset!r}")


def stage_defaults(stage: int = 1, preset: str = "tiny") -> ml_collections.ConfigDict:
  """The data fields every task of a stage shares (`config.data` of an experiment config).

  Everything but a task's batch shape and its own differences (`task_overrides`); the values
  are a reconstruction task's. See the field comments.
  """
  _check(stage, preset)
  tiny = preset == "tiny"
  c = ml_collections.ConfigDict()
  c.sources = ("default",)  # source specs, see the module docstring
  c.weights = ()  # one per (source, modality) part; () = proportional to the part's size
  c.tfds = ml_collections.ConfigDict(dict(
      data_dir="",  # TFDS data_dir ("" = TFDS default)
      image_key="image", video_key="video",  # feature holding pixels of the task's modality
      caption_key="",  # e.g. "captions/text" (a list: one is drawn per sample); "" = none
      name_key=""))  # feature naming the sample in bad-data reports; "" = "<name>#<index>"

  # decoded pictures and clips kept per worker for the next epoch, in MiB (0 = decode every
  # read; `decoded_cache`): worth it when a task's data fits, as the bundled data does
  c.decoded_cache_mb = 64 if tiny else 0
  c.tile_latent_frames = 4  # temporal tile (spec §1.4)
  c.attention_block = 128 if tiny else 512  # tokens per attention block (CPU 128, GPU/TPU 512)
  c.kv_cache_frames = 0  # = model.decoder_kv_cache_frames (the table covers the decoder's cache)
  # The perceptual resize weights in each batch (images up to max_side px -> size^2); 0 = none.
  # The trainer sets them from config.loss when a perceptual term is on (`data_canvas`).
  c.perceptual = ml_collections.ConfigDict(dict(size=0, max_side=0))

  c.image = ml_collections.ConfigDict(dict(
      min_side=32 if tiny else 64,  # longer side after resize ~ U[min_side, max_side] px
      max_side=128 if tiny else IMAGE_MAX_SIDE[stage],
      allow_upscale=True,  # False: never enlarge (the side is capped at the source's)
      hflip=True))  # random horizontal flip (off when captions may say left/right)
  c.video = ml_collections.ConfigDict(dict(
      min_side=32 if tiny else 64,
      max_side=96 if tiny else VIDEO_MAX_SIDE[stage],
      allow_upscale=True,
      hflip=True,
      strides=tuple(range(1, 13)),  # reconstruction: frame stride drawn from these
      fps=0.0,  # > 0: sample at this rate instead of strides
      max_frames=8 if tiny else 32,
      long="split"))  # rows too short: split|truncate|drop
  c.voxels = ml_collections.ConfigDict(dict(
      num_views=16,  # meshes / NeRF folders rendered or read at 256^2
      max_voxels=0,  # 0 = row_len; larger assets are handled by `long`
      long="subsample" if tiny else "drop"))  # "drop" | "subsample" (random subset, counted)
  c.text = ml_collections.ConfigDict(dict(
      tokenizer="bytes",  # "bytes" (ByteTokenizer) or a SentencePiece model path (Gemma)
      text_len=64,
      required=False))  # True: a sample without a caption is bad data ("missing_caption")

  c.pack = ml_collections.ConfigDict(dict(
      lookahead=1.5,  # candidate tokens gathered per batch, as a multiple of B * L
      max_wait=4,  # batches a left-over sample may wait before it is placed first
      read_threads=0,  # threads decoding records ahead inside each worker (0 = inline)
      read_ahead=8))  # records decoded ahead when read_threads > 0

  c.seed = 0
  c.shuffle = True
  c.num_epochs = 0  # 0 = repeat forever
  c.shard_index = -1  # -1 = jax.process_index()
  c.shard_count = -1  # -1 = jax.process_count()
  c.num_workers = 0  # Grain worker processes (mp_prefetch); 0 = in this process
  c.worker_buffer_size = 2  # batches buffered per worker
  c.prefetch_batches = 2  # with num_workers = 0: batches prepared ahead in a thread
  c.bad = ml_collections.ConfigDict(dict(
      max_fraction=0.1,  # abort when more than this fraction of records is bad ...
      min_records=50,  # ... once at least this many records were read
      warn_limit=20))  # log a warning for the first N bad records (then only in metrics)
  return c


def task_overrides(name: str, stage: int = 1, preset: str = "tiny") -> ml_collections.ConfigDict:
  """What task `name` changes of `stage_defaults(stage, preset)`: its batch shape, its sources
  (() = the stage's) and, for understanding, what captions need (no flips, 1 FPS, captions
  required)."""
  _check(stage, preset)
  modality, task = _split(name)
  tiny = preset == "tiny"
  rows, row_len, slots = _SHAPES[preset][modality]
  c = ml_collections.ConfigDict()
  c.batch_rows = rows  # B
  c.row_len = row_len  # L tokens per row
  c.max_samples_per_row = slots  # S
  c.sources = ()  # () = the stage's `sources` (and its `weights`)
  c.weights = ()  # with own sources: () = proportional to the part's size
  if task == "understanding":
    if modality == "image":
      c.image = ml_collections.ConfigDict(dict(hflip=False))
    elif modality == "video":
      c.video = ml_collections.ConfigDict(dict(
          hflip=False, fps=1.0, max_frames=16 if tiny else 64, long="truncate"))
    c.text = ml_collections.ConfigDict(dict(required=True))
  return c


def default_task_config(name: str = "image_recon", stage: int = 1, preset: str = "tiny"
                        ) -> ml_collections.ConfigDict:
  """The full data config of one task at one curriculum stage: `task_overrides` merged onto
  `stage_defaults`, with the task's name, kind and modality.

  Args:
    name: one of `TASKS` ("<modality>_<recon|understand>").
    stage: curriculum stage 1-4 (sets the resolution ranges).
    preset: "paper" (paper resolutions, long rows) or "tiny" (small sides and rows for CPU runs
      on the bundled data).
  """
  modality, task = _split(name)
  return merge(stage_defaults(stage, preset), task_overrides(name, stage, preset), name, task,
               modality)


def merge(defaults: ml_collections.ConfigDict, overrides, name: str, task: str, modality: str,
          where: str = "") -> ml_collections.ConfigDict:
  """`overrides` (a sparse task data config) merged onto a copy of `defaults` -> a full task
  config with `name`, `task` ("reconstruction" | "understanding") and `modalities`.

  The overrides must set the batch shape (`PER_TASK`); any other field must be one `defaults`
  has (ValueError naming it otherwise, so a misspelt override cannot pass silently). Sources of
  () mean the defaults' `sources` and `weights`; own sources come with own `weights` (() =
  proportional). `where` names the overrides in errors (default "tasks.<name>.data").
  """
  where = where or f"tasks.{name}.data"
  c = ml_collections.ConfigDict(defaults.to_dict())
  c.name = name
  c.task = task
  c.modalities = (modality,)  # modalities read from every source ("image", "video", "voxels")
  overrides = dict(overrides)
  for field in PER_TASK:
    if field not in overrides:
      raise ValueError(f"{where}.{field}: missing (each task sets its batch shape: "
                       f"{', '.join(PER_TASK)})")
    c[field] = 0
  if not tuple(overrides.get("sources", ())):
    overrides.pop("sources", None)
    if not tuple(overrides.get("weights", ())):
      overrides.pop("weights", None)
  elif not tuple(overrides.get("weights", ())):
    overrides["weights"] = ()
  _merge_into(c, overrides, where)
  return c


def _merge_into(node: ml_collections.ConfigDict, overrides, where: str) -> None:
  for key, value in dict(overrides).items():
    if key not in node:
      close = difflib.get_close_matches(key, list(node), n=1)
      hint = f"; did you mean {close[0]!r}?" if close else ""
      raise ValueError(f"{where}.{key}: no such data field (not in the stage-wide "
                       f"config.data{hint})")
    if isinstance(node[key], ml_collections.ConfigDict):
      if not hasattr(value, "items"):
        raise ValueError(f"{where}.{key}: a section of fields, got {value!r}")
      _merge_into(node[key], value, f"{where}.{key}")
      continue
    if hasattr(value, "items"):
      raise ValueError(f"{where}.{key}: a single value, got a section {dict(value)!r}")
    try:
      node[key] = tuple(value) if isinstance(value, list) else value
    except TypeError as e:
      raise ValueError(f"{where}.{key}: {e}") from None


def has_data(cfg: ml_collections.ConfigDict, name: str) -> bool:
  """Whether task `name` of an experiment config has a data section (a task fed by its own
  iterators, as in tests, may have none)."""
  return "data" in cfg.tasks[name]


def resolve_task(cfg: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """The full data config of task `name` of an experiment config `cfg`.

  `cfg.tasks[name].data` (sparse: the task's batch shape and differences) merged onto the
  stage-wide `cfg.data`. A config saved before `config.data` existed holds each task's full data
  config; it resolves to itself. The task's modality and kind come from its name
  (`<modality>_<recon|understand...>`) unless the task sets `modality` / `task`.

  Raises ValueError (one line naming the field) for an override `cfg.data` does not have.
  """
  t = cfg.tasks[name]
  modality, kind = task_kind(name, t)
  where = f"config.tasks.{name}.data"
  own = t.get("data", ml_collections.ConfigDict())
  if "data" not in cfg:  # an earlier run's config: the task's data is complete
    if "name" not in own:
      raise ValueError(f"{where}: missing (and no stage-wide config.data)")
    return ml_collections.ConfigDict(own.to_dict() if hasattr(own, "to_dict") else own)
  return merge(cfg.data, own, name, kind, modality, where)


def task_kind(name: str, task_cfg) -> tuple[str, str]:
  """(modality, "reconstruction" | "understanding") of an experiment task: from its name
  `<modality>_<recon|understand...>` unless its config sets `modality` / `task`."""
  modality, _, kind = name.partition("_")
  modality = task_cfg.get("modality", modality)
  kind = "understanding" if kind.startswith("understand") else "reconstruction"
  return modality, task_cfg.get("task", kind)


def default_mixture_config(stage: int = 1, preset: str = "tiny") -> ml_collections.ConfigDict:
  """The paper's task mixture of a stage: {tasks: {name: task config}, ratios: {name: ratio}}.

  The trainer walks `ratios` round-robin (`mixing.TaskSchedule`). Image understanding is
  included as a task but not in the ratios (the paper runs it alongside every stage).
  """
  ratios = dict(STAGE_RATIOS[stage])
  names = list(ratios) + ["image_understand"]
  c = ml_collections.ConfigDict()
  c.tasks = ml_collections.ConfigDict({n: default_task_config(n, stage, preset) for n in names})
  c.ratios = ml_collections.ConfigDict(ratios)
  return c
