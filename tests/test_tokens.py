"""The token format (spec §1.2, §1.3): layout, coords, exact round trips, input validation."""
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoken_jax.tokens import (
  Voxels,
  image_to_tokens,
  patchify,
  to_tokens,
  tokens_to_pixels,
  tokens_to_voxels,
  unpatchify,
  video_to_tokens,
  voxels_to_tokens,
)

FAST = settings(max_examples=25, deadline=None)


def _pixels(rng, *shape):
  return rng.uniform(-1, 1, shape).astype(np.float32)


def _centre_crop(x, h, w):
  h16, w16 = h // 16 * 16, w // 16 * 16
  top, left = (h - h16) // 2, (w - w16) // 2
  return x[..., top:top + h16, left:left + w16, :]


@FAST
@given(h=st.integers(16, 70), w=st.integers(16, 70), seed=st.integers(0, 2**31))
def test_image_round_trip_is_the_centre_crop(h, w, seed):
  img = _pixels(np.random.default_rng(seed), h, w, 3)
  seq = to_tokens(img)
  assert seq.kind == "image" and seq.frames == 1 and seq.grid == (1, h // 16, w // 16)
  assert seq.patches.dtype == np.float32 and seq.coords.dtype == np.int32
  assert len(seq) == (h // 16) * (w // 16)
  np.testing.assert_array_equal(tokens_to_pixels(seq.patches, seq), _centre_crop(img, h, w))
  # An image is frame 0 of a 4-frame patch; frames 1..3 are zero.
  assert not seq.patches.reshape(len(seq), 4, 768)[:, 1:].any()


@FAST
@given(t=st.integers(1, 13), h=st.integers(16, 40), w=st.integers(16, 40),
       seed=st.integers(0, 2**31))
def test_video_round_trip_keeps_the_real_frames(t, h, w, seed):
  vid = _pixels(np.random.default_rng(seed), t, h, w, 3)
  seq = to_tokens(vid)
  real = t if t < 4 else t // 4 * 4
  assert seq.kind == "video" and seq.frames == real
  assert seq.grid == (max(t // 4, 1), h // 16, w // 16)
  out = tokens_to_pixels(seq.patches, seq)
  assert out.shape == (real, h // 16 * 16, w // 16 * 16, 3)
  np.testing.assert_array_equal(out, _centre_crop(vid[:real], h, w))
  if t < 4:  # padding frames are zeros (mid-grey)
    assert not seq.patches.reshape(len(seq), 4, 768)[:, t:].any()


def test_crop_offset_of_odd_sizes():
  img = _pixels(np.random.default_rng(0), 37, 50, 3)  # crops 32 x 48 from (2, 1)
  seq = image_to_tokens(img)
  np.testing.assert_array_equal(tokens_to_pixels(seq.patches, seq), img[2:34, 1:49])


def test_token_layout_matches_the_index_formula():
  rng = np.random.default_rng(1)
  vid = _pixels(rng, 8, 48, 32, 3)  # grid (2, 3, 2)
  seq = video_to_tokens(vid)
  nt, nh, nw = seq.grid
  for _ in range(50):
    k = int(rng.integers(len(seq)))
    pt, ph, pw, c = (int(rng.integers(n)) for n in (4, 16, 16, 3))
    t, row, col = k // (nh * nw), k // nw % nh, k % nw
    assert tuple(seq.coords[k]) == (t, row, col, 0)
    index = ((pt * 16 + ph) * 16 + pw) * 3 + c
    assert seq.patches[k, index] == vid[t * 4 + pt, row * 16 + ph, col * 16 + pw, c]


def test_coords_are_raster_ordered_t_row_col():
  seq = video_to_tokens(np.zeros((9, 32, 48, 3), np.float32))  # 9 frames -> 8, grid (2, 2, 3)
  expected = [(t, r, c, 0) for t in range(2) for r in range(2) for c in range(3)]
  assert [tuple(x) for x in seq.coords] == expected


def test_patchify_unpatchify_are_inverse():
  x = _pixels(np.random.default_rng(2), 8, 32, 16, 3)
  p = patchify(x)
  assert p.shape == (2 * 2 * 1, 3072)
  np.testing.assert_array_equal(unpatchify(p, (2, 2, 1)), x)


def test_tokens_to_pixels_places_tokens_by_coords():
  img = _pixels(np.random.default_rng(3), 48, 64, 3)
  seq = image_to_tokens(img)
  perm = np.random.default_rng(4).permutation(len(seq))
  shuffled = type(seq)(patches=seq.patches[perm], coords=seq.coords[perm], kind="image",
                       frames=1, grid=seq.grid)
  np.testing.assert_array_equal(tokens_to_pixels(shuffled.patches, shuffled), img)
  decoded = seq.patches * 1.5 + 0.25  # any decoder output: not clipped, same layout
  np.testing.assert_array_equal(tokens_to_pixels(decoded, seq), img * 1.5 + 0.25)


def _voxels(rng, n, dtype=np.float16):
  flat = rng.choice(64**3, size=n, replace=False)
  coords = np.stack([flat // 4096, flat // 64 % 64, flat % 64], axis=1).astype(np.int32)
  return Voxels(coords=coords, feats=rng.uniform(0, 1, (n, 768)).astype(dtype))


@FAST
@given(n=st.integers(1, 60), seed=st.integers(0, 2**31))
def test_voxel_round_trip_keeps_order_and_is_exact_for_float16_feats(n, seed):
  vox = _voxels(np.random.default_rng(seed), n)
  seq = to_tokens(vox)
  assert seq.kind == "voxels" and seq.frames == 0 and seq.grid == () and len(seq) == n
  np.testing.assert_array_equal(seq.coords[:, 0], 1)
  np.testing.assert_array_equal(seq.coords[:, 1:], vox.coords)
  np.testing.assert_array_equal(seq.patches[:, :768], vox.feats.astype(np.float32) * 2 - 1)
  assert not seq.patches[:, 768:].any()
  back = tokens_to_voxels(seq.patches, seq)
  np.testing.assert_array_equal(back.coords, vox.coords)
  np.testing.assert_array_equal(back.feats, vox.feats.astype(np.float32))


def test_voxel_round_trip_of_float32_feats_is_within_one_ulp():
  vox = _voxels(np.random.default_rng(5), 30, np.float32)
  back = tokens_to_voxels(voxels_to_tokens(vox).patches, voxels_to_tokens(vox))
  np.testing.assert_allclose(back.feats, vox.feats, rtol=0, atol=6e-8)


def test_tokens_to_voxels_does_not_clip():
  seq = voxels_to_tokens(_voxels(np.random.default_rng(6), 4))
  out = tokens_to_voxels(np.full((4, 3072), 1.5, np.float32), seq)
  np.testing.assert_array_equal(out.feats, 1.25)


_OK_VOX = _voxels(np.random.default_rng(7), 3)
_BAD = {
    "rank": (np.zeros((16, 16), np.float32), "expected an image"),
    "rank5": (np.zeros((1, 4, 16, 16, 3), np.float32), "expected an image"),
    "channels_first": (np.zeros((3, 32, 32), np.float32), "channels-last"),
    "video_channels": (np.zeros((4, 32, 32, 4), np.float32), "channels-last"),
    "small_h": (np.zeros((15, 32, 3), np.float32), "at least 16"),
    "small_w": (np.zeros((2, 32, 8, 3), np.float32), "at least 16"),
    "no_frames": (np.zeros((0, 32, 32, 3), np.float32), "at least 1 frame"),
    "nan": (np.full((16, 16, 3), np.nan, np.float32), "non-finite"),
    "inf": (np.full((4, 16, 16, 3), np.inf, np.float32), "non-finite"),
    "uint8": (np.zeros((16, 16, 3), np.uint8), "x/127.5-1"),
    "bool": (np.zeros((16, 16, 3), bool), "dtype bool"),
    "range": (np.full((16, 16, 3), 255.0, np.float32), "[-1, 1]"),
    "not_array": ([[0.0] * 3] * 16, "numpy array"),
    "empty_voxels": (Voxels(np.zeros((0, 3), np.int32), np.zeros((0, 768), np.float32)),
                     "empty voxel set"),
    "voxel_range": (Voxels(np.array([[0, 64, 0]]), np.zeros((1, 768), np.float32)),
                    "[0, 64)"),
    "voxel_negative": (Voxels(np.array([[0, -1, 0]]), np.zeros((1, 768), np.float32)),
                       "[0, 64)"),
    "voxel_float_coords": (Voxels(np.array([[0.5, 1, 0]]), np.zeros((1, 768), np.float32)),
                           "integers"),
    "voxel_coord_shape": (Voxels(np.zeros((2, 4), np.int32), np.zeros((2, 768), np.float32)),
                          "[N, 3]"),
    "voxel_feat_shape": (Voxels(_OK_VOX.coords, np.zeros((3, 3072), np.float32)),
                         "[N=3, 768]"),
    "voxel_feat_range": (Voxels(_OK_VOX.coords, np.full((3, 768), -0.5, np.float32)),
                         "[0, 1]"),
    "voxel_feat_nan": (Voxels(_OK_VOX.coords, np.full((3, 768), np.nan, np.float32)),
                       "non-finite"),
    "voxel_feat_int": (Voxels(_OK_VOX.coords, np.zeros((3, 768), np.uint8)), "x/255"),
    "voxel_duplicates_int8": (Voxels(np.array([[10, 2, 3], [10, 2, 3]], np.int8),
                                     np.zeros((2, 768), np.float32)), "e.g. (10, 2, 3)"),
    "voxel_duplicates": (Voxels(np.array([[1, 2, 3], [4, 5, 6], [1, 2, 3]]),
                                np.zeros((3, 768), np.float32)), "duplicate voxel coords"),
}


@pytest.mark.parametrize("name", sorted(_BAD))
def test_bad_input_raises_a_helpful_value_error(name):
  x, message = _BAD[name]
  with pytest.raises(ValueError, match=re.escape(message)):
    to_tokens(x)


def test_small_overshoot_is_accepted_and_kept():
  img = np.full((16, 16, 3), 1.0005, np.float32)
  seq = to_tokens(img)
  np.testing.assert_array_equal(tokens_to_pixels(seq.patches, seq), img)


def test_reverse_rejects_mismatched_inputs():
  seq = image_to_tokens(np.zeros((32, 32, 3), np.float32))
  with pytest.raises(ValueError, match="patches must be"):
    tokens_to_pixels(np.zeros((3, 3072), np.float32), seq)
  with pytest.raises(ValueError, match="use tokens_to_pixels"):
    tokens_to_voxels(seq.patches, seq)
  vseq = voxels_to_tokens(_OK_VOX)
  with pytest.raises(ValueError, match="use tokens_to_voxels"):
    tokens_to_pixels(vseq.patches, vseq)
