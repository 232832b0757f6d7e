"""The sparse 4D token format: images, videos and voxel sets <-> (patches, coords).

Host-side numpy only (spec §1.2, §1.3). A sample becomes `n` tokens:

  patches [n, 3072] float32 in [-1, 1]: one 4 x 16 x 16 x RGB patch, flattened (pt, ph, pw, c),
    i.e. index = ((pt * 16 + ph) * 16 + pw) * 3 + c.
  coords  [n, 4] int32 = (t, x, y, z): t, x = patch row, y = patch column (counted in patches)
    and z = 0 for images and videos; (1, i, j, k) voxel indices in the 64^3 grid for 3D.

Images and videos are centre-cropped to multiples of 16 (no resize); time is zero-padded to 4
frames when shorter, else cut to a multiple of 4. Tokens are ordered (t, row, col) row-major.
A voxel's 768 features (16 x 16 RGB in [0, 1], order (row-in-patch, col-in-patch, rgb)) become
`feats * 2 - 1` in the pt = 0 slot of the patch; the other 2304 entries are zero.

The inverse functions take any patches (e.g. a decoder's output) together with the `TokenSeq`
that describes their layout. Round trips are bitwise exact for float32 pixels whose size is
already a multiple of 16, and for voxel features stored as float16 (the release's format).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from atoken_jax.config import FRAME_PATCH_DIM, PATCH_DIM, PATCH_HW, PATCH_T, VOXEL_GRID

KINDS = ("image", "video", "voxels")
# Per-slot codes a packed batch carries (`modality`, `task` [B, S]); -1 marks an empty slot.
MODALITY_IDS = {"image": 0, "video": 1, "voxels": 2}
TASK_IDS = {"reconstruction": 0, "understanding": 1}
_RANGE_TOL = 1e-3  # pixels / features may overshoot their range by this much (resampling noise)


@dataclasses.dataclass(frozen=True, eq=False)
class Voxels:
  """An occupied-voxel set of one 3D asset (spec §1.3).

  Attributes:
    coords: [N, 3] integer voxel indices (i, j, k) in [0, 64).
    feats: [N, 768] float in [0, 1]; channel order (row-in-patch, col-in-patch, rgb).

  Not validated on construction (a decoder's output may leave [0, 1]); `voxels_to_tokens`
  validates its input.
  """
  coords: np.ndarray
  feats: np.ndarray

  def __len__(self) -> int:
    return int(np.shape(self.coords)[0])


@dataclasses.dataclass(eq=False)
class TokenSeq:
  """The tokens of one sample.

  Attributes:
    patches: [n, 3072] float32.
    coords: [n, 4] int32 (t, x=row, y=col, z).
    kind: "image", "video" or "voxels".
    frames: real frames after truncation: 1 for an image, T' for a video (T' = T when T < 4,
      else T rounded down to a multiple of 4), 0 for voxels.
    grid: (nt, nh, nw) tokens along time, rows and columns for image/video; () for voxels.
  """
  patches: np.ndarray
  coords: np.ndarray
  kind: str
  frames: int
  grid: tuple = ()

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"TokenSeq.kind must be one of {KINDS}, got {self.kind!r}")
    n = self.patches.shape[0]
    if self.patches.shape != (n, PATCH_DIM) or self.coords.shape != (n, 4):
      raise ValueError(f"TokenSeq needs patches [n, {PATCH_DIM}] and coords [n, 4], got "
                       f"{self.patches.shape} and {self.coords.shape}")

  def __len__(self) -> int:
    return int(self.patches.shape[0])


# --------------------------------------------------------------------------- patchify


def real_width(kind: str) -> int:
  """The patch values that carry data: all 4 frames of a video's patch, frame 0 of an image's
  (time-padded) or a voxel's (zero-padded); the rest is zero padding."""
  return PATCH_DIM if kind == "video" else FRAME_PATCH_DIM


def full_width(patches: np.ndarray) -> np.ndarray:
  """[n, 3072] patches from [n, 3072] or frame-0 [n, 768] ones (frames 1-3 zero)."""
  if patches.shape[-1] == PATCH_DIM:
    return patches
  if patches.shape[-1] != FRAME_PATCH_DIM:
    raise ValueError(f"patches must be {PATCH_DIM} or {FRAME_PATCH_DIM} wide, got "
                     f"{patches.shape}")
  out = np.zeros(patches.shape[:-1] + (PATCH_DIM,), patches.dtype)
  out[..., :FRAME_PATCH_DIM] = patches
  return out


def patchify(frames: np.ndarray) -> np.ndarray:
  """[4*nt, 16*nh, 16*nw, 3] -> [nt*nh*nw, 3072], tokens (t, row, col), each (pt, ph, pw, c)."""
  t4, h16, w16, c = frames.shape
  nt, nh, nw = t4 // PATCH_T, h16 // PATCH_HW, w16 // PATCH_HW
  if c != 3 or (nt * PATCH_T, nh * PATCH_HW, nw * PATCH_HW) != (t4, h16, w16):
    raise ValueError(f"patchify needs [4k, 16m, 16n, 3] frames, got {frames.shape}")
  x = frames.reshape(nt, PATCH_T, nh, PATCH_HW, nw, PATCH_HW, 3)
  x = x.transpose(0, 2, 4, 1, 3, 5, 6)  # nt nh nw | pt ph pw c
  return x.reshape(nt * nh * nw, PATCH_DIM)


def unpatchify(patches: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
  """Inverse of `patchify`: [nt*nh*nw, 3072] in raster order -> [4*nt, 16*nh, 16*nw, 3]."""
  nt, nh, nw = grid
  if patches.shape != (nt * nh * nw, PATCH_DIM):
    raise ValueError(f"unpatchify: grid {grid} needs patches [{nt * nh * nw}, {PATCH_DIM}], "
                     f"got {patches.shape}")
  x = patches.reshape(nt, nh, nw, PATCH_T, PATCH_HW, PATCH_HW, 3)
  x = x.transpose(0, 3, 1, 4, 2, 5, 6)  # nt pt | nh ph | nw pw | c
  return x.reshape(nt * PATCH_T, nh * PATCH_HW, nw * PATCH_HW, 3)


def grid_coords(grid: tuple[int, int, int]) -> np.ndarray:
  """[nt*nh*nw, 4] int32 coords (t, row, col, 0) of a full raster in (t, row, col) order."""
  t, r, c = np.meshgrid(*(np.arange(n, dtype=np.int32) for n in grid), indexing="ij")
  return np.stack([t.ravel(), r.ravel(), c.ravel(), np.zeros(t.size, np.int32)], axis=1)


# --------------------------------------------------------------------------- validation


def _check_pixels(x: np.ndarray, what: str) -> None:
  if not np.issubdtype(x.dtype, np.floating):
    hint = " (uint8 pixels: convert with x/127.5-1)" if np.issubdtype(x.dtype, np.number) else ""
    raise ValueError(f"{what} must be float in [-1, 1], got dtype {x.dtype}{hint}")
  if x.size and not np.isfinite(x).all():
    raise ValueError(f"{what} holds {np.count_nonzero(~np.isfinite(x))} non-finite values")
  if x.size and (x.min() < -1 - _RANGE_TOL or x.max() > 1 + _RANGE_TOL):
    raise ValueError(f"{what} values must lie in [-1, 1], got [{x.min():.4g}, {x.max():.4g}]"
                     " (uint8 pixels: convert with x/127.5-1)")


def validate_voxels(v: Voxels) -> None:
  """Raises ValueError unless `v` is a valid non-empty voxel set (spec §1.3)."""
  coords, feats = np.asarray(v.coords), np.asarray(v.feats)
  if coords.ndim != 2 or coords.shape[1] != 3:
    raise ValueError(f"voxel coords must be [N, 3], got shape {coords.shape}")
  if coords.shape[0] == 0:
    raise ValueError("empty voxel set: a 3D sample needs at least one occupied voxel")
  if not np.issubdtype(coords.dtype, np.integer):
    raise ValueError(f"voxel coords must be integers, got dtype {coords.dtype}")
  if coords.min() < 0 or coords.max() >= VOXEL_GRID:
    raise ValueError(f"voxel coords must lie in [0, {VOXEL_GRID}), got "
                     f"[{coords.min()}, {coords.max()}]")
  if feats.shape != (coords.shape[0], FRAME_PATCH_DIM):
    raise ValueError(f"voxel feats must be [N={coords.shape[0]}, {FRAME_PATCH_DIM}], got "
                     f"{feats.shape}")
  if not np.issubdtype(feats.dtype, np.floating):
    raise ValueError(f"voxel feats must be float in [0, 1], got dtype {feats.dtype}"
                     " (uint8 colours: convert with x/255)")
  if not np.isfinite(feats).all():
    raise ValueError(f"voxel feats hold {np.count_nonzero(~np.isfinite(feats))} non-finite values")
  if feats.min() < -_RANGE_TOL or feats.max() > 1 + _RANGE_TOL:
    raise ValueError(f"voxel feats must lie in [0, 1], got [{feats.min():.4g}, {feats.max():.4g}]")
  c = coords.astype(np.int64)
  flat = (c[:, 0] * VOXEL_GRID + c[:, 1]) * VOXEL_GRID + c[:, 2]
  uniq, counts = np.unique(flat, return_counts=True)
  if len(uniq) != len(flat):
    first = int(uniq[counts > 1][0])
    ijk = (first // VOXEL_GRID**2, first // VOXEL_GRID % VOXEL_GRID, first % VOXEL_GRID)
    raise ValueError(f"{len(flat) - len(uniq)} duplicate voxel coords, e.g. {ijk}")


# --------------------------------------------------------------------------- forward


def _frames_to_tokens(frames: np.ndarray, kind: str) -> TokenSeq:
  """[T, H, W, 3] checked pixels -> TokenSeq (crop, pad/truncate time, patchify)."""
  t, h, w, _ = frames.shape
  h16, w16 = h // PATCH_HW * PATCH_HW, w // PATCH_HW * PATCH_HW
  top, left = (h - h16) // 2, (w - w16) // 2
  frames = frames[:, top:top + h16, left:left + w16].astype(np.float32)
  if t < PATCH_T:
    real = t
    pad = np.zeros((PATCH_T - t, h16, w16, 3), np.float32)
    frames = np.concatenate([frames, pad], axis=0)
  else:
    real = t // PATCH_T * PATCH_T
    frames = frames[:real]
  grid = (frames.shape[0] // PATCH_T, h16 // PATCH_HW, w16 // PATCH_HW)
  return TokenSeq(patches=np.ascontiguousarray(patchify(frames)), coords=grid_coords(grid),
                  kind=kind, frames=1 if kind == "image" else real, grid=grid)


def _check_frames(x: np.ndarray, what: str) -> None:
  if x.shape[-1] != 3:
    raise ValueError(f"{what} must be channels-last RGB [..., H, W, 3], got shape {x.shape}")
  if x.shape[-3] < PATCH_HW or x.shape[-2] < PATCH_HW:
    raise ValueError(f"{what} H and W must be at least {PATCH_HW}, got shape {x.shape}")
  _check_pixels(x, what)


def image_to_tokens(img: np.ndarray) -> TokenSeq:
  """[H, W, 3] float in [-1, 1] -> TokenSeq of (H//16)*(W//16) tokens, kind "image"."""
  img = _as_array(img, "image")
  if img.ndim != 3:
    raise ValueError(f"image must be [H, W, 3], got shape {img.shape}")
  _check_frames(img, "image")
  return _frames_to_tokens(img[None], "image")


def video_to_tokens(vid: np.ndarray) -> TokenSeq:
  """[T, H, W, 3] float in [-1, 1] -> TokenSeq of max(T//4, 1)*(H//16)*(W//16) tokens."""
  vid = _as_array(vid, "video")
  if vid.ndim != 4:
    raise ValueError(f"video must be [T, H, W, 3], got shape {vid.shape}")
  if vid.shape[0] < 1:
    raise ValueError(f"video needs at least 1 frame, got shape {vid.shape}")
  _check_frames(vid, "video")
  return _frames_to_tokens(vid, "video")


def voxels_to_tokens(vox: Voxels) -> TokenSeq:
  """Voxels(N) -> TokenSeq of N tokens in the given voxel order, coords (1, i, j, k)."""
  validate_voxels(vox)
  feats = np.asarray(vox.feats).astype(np.float32)
  n = feats.shape[0]
  patches = np.zeros((n, PATCH_DIM), np.float32)
  patches[:, :FRAME_PATCH_DIM] = feats * 2 - 1
  coords = np.empty((n, 4), np.int32)
  coords[:, 0] = 1  # the release's t for 3D; numerically inert (spec §1.3)
  coords[:, 1:] = vox.coords
  return TokenSeq(patches=patches, coords=coords, kind="voxels", frames=0)


def to_tokens(x) -> TokenSeq:
  """Dispatch: `Voxels` -> voxels, [H, W, 3] -> image, [T, H, W, 3] -> video."""
  if isinstance(x, Voxels):
    return voxels_to_tokens(x)
  x = _as_array(x, "input")
  if x.ndim == 3:
    return image_to_tokens(x)
  if x.ndim == 4:
    return video_to_tokens(x)
  raise ValueError(f"expected an image [H, W, 3], a video [T, H, W, 3] or Voxels, got an "
                   f"array of shape {x.shape}")


def _as_array(x, what: str) -> np.ndarray:
  if not isinstance(x, np.ndarray):
    raise ValueError(f"{what} must be a numpy array (or Voxels), got {type(x).__name__}")
  return x


# --------------------------------------------------------------------------- reverse


def _check_patches(patches: np.ndarray, seq: TokenSeq) -> np.ndarray:
  patches = np.asarray(patches)
  if patches.shape != (len(seq), PATCH_DIM):
    raise ValueError(f"patches must be [{len(seq)}, {PATCH_DIM}] to match the TokenSeq, got "
                     f"{patches.shape}")
  return patches


def tokens_to_pixels(patches: np.ndarray, seq: TokenSeq) -> np.ndarray:
  """[n, 3072] patches laid out as `seq` -> image [H', W', 3] or video [frames, H', W', 3].

  Tokens are placed by `seq.coords` (any token order works); an image keeps frame 0, a video
  its `seq.frames` real frames. The dtype of `patches` is kept; values are not clipped.
  """
  if seq.kind == "voxels":
    raise ValueError("tokens_to_pixels got a voxel TokenSeq; use tokens_to_voxels")
  patches = _check_patches(patches, seq)
  nt, nh, nw = seq.grid
  if len(seq) != nt * nh * nw:
    raise ValueError(f"TokenSeq with grid {seq.grid} must hold {nt * nh * nw} tokens, "
                     f"got {len(seq)}")
  t, r, c = (seq.coords[:, i].astype(np.int64) for i in range(3))
  flat = (t * nh + r) * nw + c
  inside = (t >= 0) & (t < nt) & (r >= 0) & (r < nh) & (c >= 0) & (c < nw)
  if not inside.all() or not np.array_equal(np.sort(flat), np.arange(len(flat))):
    raise ValueError(f"TokenSeq coords do not cover its grid {seq.grid} exactly once")
  raster = np.empty_like(patches)
  raster[flat] = patches
  frames = unpatchify(raster, seq.grid)
  if seq.kind == "image":
    return frames[0]
  return frames[:seq.frames]


def tokens_to_voxels(patches: np.ndarray, seq: TokenSeq) -> Voxels:
  """[n, 3072] patches laid out as `seq` -> Voxels(coords [n, 3] int32, feats [n, 768]).

  feats = (patches[:, :768] + 1) / 2, not clipped (the exact inverse of `voxels_to_tokens`).
  """
  if seq.kind != "voxels":
    raise ValueError(f"tokens_to_voxels got a {seq.kind} TokenSeq; use tokens_to_pixels")
  patches = _check_patches(patches, seq)
  feats = (patches[:, :FRAME_PATCH_DIM] + 1) / 2
  return Voxels(coords=seq.coords[:, 1:].astype(np.int32), feats=feats)
