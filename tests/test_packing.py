"""Packing variable-size samples into static [B, L] rows, and back."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoken_jax.packing import (
  pack,
  pack_greedy,
  packing_efficiency,
  tile_layout,
  unpack,
  unpack_samples,
)
from atoken_jax.pos_interp import position_weights
from atoken_jax.tokens import TokenSeq, Voxels, to_tokens


def _sample(rng, kind):
  if kind == "image":
    return to_tokens(rng.uniform(-1, 1, (rng.integers(16, 80), rng.integers(16, 80), 3))
                     .astype(np.float32))
  if kind == "video":
    return to_tokens(rng.uniform(-1, 1, (rng.integers(1, 30), rng.integers(16, 48),
                                         rng.integers(16, 48), 3)).astype(np.float32))
  n = int(rng.integers(1, 40))
  flat = rng.choice(64**3, n, replace=False)
  coords = np.stack([flat // 4096, flat // 64 % 64, flat % 64], axis=1)
  return to_tokens(Voxels(coords, rng.uniform(0, 1, (n, 768)).astype(np.float32)))


def _samples(seed, count):
  rng = np.random.default_rng(seed)
  return [_sample(rng, rng.choice(["image", "video", "voxels"])) for _ in range(count)]


def _check_invariants(seqs, batch, tile_latent_frames=4):
  """Every property a packed batch promises, checked token by token against its sample."""
  b, l = batch.segment_ids.shape
  pad = batch.segment_ids == 0
  assert ((batch.sample_ids == 0) == pad).all() and ((batch.token_index == -1) == pad).all()
  for name in ("patches", "coords", "tile_index", "pos_row_weights", "pos_col_weights"):
    assert not getattr(batch, name)[pad].any(), name
  for r in range(b):
    real = np.flatnonzero(~pad[r])
    assert (real == np.arange(len(real))).all()  # padding only at the end of the row
    # A segment id belongs to exactly one (sample slot, tile).
    pairs = {(s, t) for s, t in zip(batch.sample_ids[r, real], batch.tile_index[r, real])}
    assert len(pairs) == len(set(batch.segment_ids[r, real]))
  for r, k in zip(*np.nonzero(batch.sample_index >= 0)):
    seq = seqs[batch.sample_index[r, k]]
    at = batch.sample_ids[r] == k + 1
    assert at.sum() == len(seq) == batch.sample_lengths[r, k]
    np.testing.assert_array_equal(batch.token_index[r, at], np.arange(len(seq)))
    t = seq.coords[:, 0]
    np.testing.assert_array_equal(batch.coords[r, at, 0], t % tile_latent_frames)
    np.testing.assert_array_equal(batch.coords[r, at, 1:], seq.coords[:, 1:])
    tiles = np.unique(t // tile_latent_frames)
    np.testing.assert_array_equal(batch.tile_index[r, at], np.searchsorted(tiles, t // 4))
    for tile in tiles:  # pos weights = position_weights of the token's (sample, tile) group
      mine = t // tile_latent_frames == tile
      row_w, col_w = position_weights(seq.coords[mine])
      np.testing.assert_array_equal(batch.pos_row_weights[r, at][mine], row_w)
      np.testing.assert_array_equal(batch.pos_col_weights[r, at][mine], col_w)
      assert len(set(batch.segment_ids[r, at][mine])) == 1


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), count=st.integers(1, 12), slots=st.integers(1, 5),
       extra=st.integers(0, 300))
def test_pack_then_unpack_is_the_identity(seed, count, slots, extra):
  seqs = _samples(seed, count)
  row_len = max(len(s) for s in seqs) + extra
  batch = pack(seqs, row_len, slots)
  # only frame 0 when every sample is single-frame: what is left out is zero padding
  width = 3072 if any(s.kind == "video" for s in seqs) else 768
  assert batch.patches.shape == (batch.segment_ids.shape[0], row_len, width)
  assert batch.sample_index.shape[1] == slots
  assert sorted(batch.placed) == list(range(count))
  for seq, patches in zip(seqs, unpack(batch.patches, batch)):
    np.testing.assert_array_equal(patches, seq.patches[:, :width])
    assert not seq.patches[:, width:].any()
  _check_invariants(seqs, batch)
  pooled = np.where(batch.sample_index >= 0, batch.sample_index * 10, -1)[..., None]
  assert [int(x[0]) for x in unpack_samples(pooled, batch)] == [10 * i for i in range(count)]
  assert np.isclose(packing_efficiency(batch),
                    sum(map(len, seqs)) / batch.segment_ids.size)


def test_video_with_three_tiles_gets_three_segments_and_local_t():
  vid = np.random.default_rng(0).uniform(-1, 1, (48, 32, 32, 3)).astype(np.float32)
  seq = to_tokens(vid)  # 12 latent frames x 2 x 2 tokens
  batch = pack([seq, _samples(1, 1)[0]], row_len=128, max_samples_per_row=4)
  mine = batch.sample_ids[0] == 1
  assert sorted(set(batch.segment_ids[0, mine])) == [1, 2, 3]
  assert sorted(set(batch.tile_index[0, mine])) == [0, 1, 2]
  assert set(batch.coords[0, mine, 0]) == {0, 1, 2, 3}
  assert set(batch.segment_ids[0, batch.sample_ids[0] == 2]) == {4}
  _check_invariants([seq, _samples(1, 1)[0]], batch)


def test_tile_length_is_a_parameter():
  seq = to_tokens(np.zeros((16, 16, 16, 3), np.float32))  # 4 latent frames
  rank, local, _, _ = tile_layout(seq.coords, tile_latent_frames=2)
  np.testing.assert_array_equal(rank, [0, 0, 1, 1])
  np.testing.assert_array_equal(local[:, 0], [0, 1, 0, 1])
  batch = pack([seq], row_len=4, max_samples_per_row=1, tile_latent_frames=2)
  np.testing.assert_array_equal(batch.segment_ids, [[1, 1, 2, 2]])


def _seq(n):
  return TokenSeq(patches=np.full((n, 3072), n, np.float32),
                  coords=np.stack([np.zeros(n), np.arange(n), np.zeros(n), np.zeros(n)], 1)
                  .astype(np.int32), kind="image", frames=1, grid=(1, n, 1))


def test_first_fit_is_deterministic_in_input_order():
  seqs = [_seq(n) for n in (5, 4, 3, 2, 6)]
  batch = pack(seqs, row_len=8, max_samples_per_row=2)
  # 5 -> row 0; 4 -> row 1; 3 -> row 0 (8); 2 -> row 1 (6); 6 -> row 2.
  np.testing.assert_array_equal(batch.sample_index, [[0, 2], [1, 3], [4, -1]])
  np.testing.assert_array_equal(batch.sample_lengths, [[5, 3], [4, 2], [6, 0]])
  np.testing.assert_array_equal(batch.segment_ids[1], [1, 1, 1, 1, 2, 2, 0, 0])
  assert packing_efficiency(batch) == 20 / 24
  # The slot limit opens new rows even when tokens would fit.
  one_slot = pack(seqs[:3], row_len=100, max_samples_per_row=1)
  np.testing.assert_array_equal(one_slot.sample_index, [[0], [1], [2]])


def test_fixed_rows_pad_with_empty_rows_and_report_leftovers():
  seqs = [_seq(n) for n in (5, 4, 3, 7)]
  batch = pack(seqs[:2], row_len=8, max_samples_per_row=2, num_rows=3)
  assert batch.segment_ids.shape == (3, 8) and not batch.segment_ids[2:].any()  # 5 + 4 > 8
  batch, leftover = pack_greedy(seqs, row_len=8, max_samples_per_row=2, num_rows=1)
  assert leftover == [1, 3]
  assert [len(x) for x in unpack(batch.coords, batch)] == [5, 3]
  with pytest.raises(ValueError, match=r"2 of 4 samples \(11 tokens, first: sample 1\)"):
    pack(seqs, row_len=8, max_samples_per_row=2, num_rows=1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(seqs=[_seq(3), _seq(9)], row_len=8), "sample 1 has 9 tokens, more than row_len=8"),
    (dict(seqs=[_seq(3)], row_len=0), "must be >= 1"),
    (dict(seqs=[_seq(3)], row_len=8, max_samples_per_row=0), "must be >= 1"),
    (dict(seqs=[], row_len=8), "at least one sample"),
    (dict(seqs=[_seq(2), TokenSeq(np.zeros((1, 3072), np.float32), np.array([[-1, 0, 0, 0]]),
                                  "image", 1, (1, 1, 1))], row_len=8),
     "sample 1: coords must be non-negative"),
])
def test_bad_pack_arguments_raise(kwargs, message):
  kwargs.setdefault("max_samples_per_row", 2)
  with pytest.raises(ValueError, match=message):
    pack(**kwargs)


def test_unpack_rejects_wrong_shapes():
  batch = pack([_seq(3)], row_len=8, max_samples_per_row=2)
  with pytest.raises(ValueError, match=r"\[B, L, \.\.\.\]"):
    unpack(np.zeros((1, 7)), batch)
  with pytest.raises(ValueError, match=r"\[B, S, \.\.\.\]"):
    unpack_samples(np.zeros((1, 3)), batch)


def test_a_stream_fixes_its_patch_width_and_frame0_refuses_video():
  rng = np.random.default_rng(0)
  image, video = _sample(rng, "image"), _sample(rng, "video")
  assert pack([image], 128, 2, patch_dim=3072).patches.shape[-1] == 3072
  assert pack([], 128, 2, num_rows=1, patch_dim=768).patches.shape[-1] == 768
  with pytest.raises(ValueError, match="sample 1 is a video"):
    pack([image, video], 256, 2, patch_dim=768)
  with pytest.raises(ValueError, match="patch_dim must be 3072 or 768"):
    pack([image], 128, 2, patch_dim=1536)
