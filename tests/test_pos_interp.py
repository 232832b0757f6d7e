"""Position-table weights (spec §2.3) equal torch's antialiased bilinear resize + gather."""
import numpy as np
import pytest

from atoken_jax.pos_interp import (
  antialiased_bilinear_weights,
  gather_position_embedding,
  position_weights,
)

SIZES = [1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 64, 100]


@pytest.mark.parametrize("out_size", SIZES)
def test_weights_are_row_stochastic_read_only_and_cached(out_size):
  w = antialiased_bilinear_weights(16, out_size)
  assert w.shape == (out_size, 16) and w.dtype == np.float32
  np.testing.assert_allclose(w.sum(axis=1), 1, atol=1e-6)
  assert (w >= 0).all()
  assert not w.flags.writeable
  assert antialiased_bilinear_weights(16, out_size) is w


def test_hand_computed_rows():
  # Identity at the table's own size.
  np.testing.assert_array_equal(antialiased_bilinear_weights(16, 16), np.eye(16))
  # 16 -> 8: triangle of radius 2 around input position 3.0 covers pixels 1..4 at distances
  # 1.5, .5, .5, 1.5 -> weights (1 - d/2) = 1/4, 3/4, 3/4, 1/4, normalised: (1, 3, 3, 1) / 8.
  expected = np.zeros(16)
  expected[1:5] = np.array([1, 3, 3, 1]) / 8
  np.testing.assert_allclose(antialiased_bilinear_weights(16, 8)[1], expected, atol=1e-7)
  # 4 -> 8 (plain bilinear): output 1 sits at input 0.75 - 0.5 = 0.25 -> 0.75 * s0 + 0.25 * s1,
  # output 0 sits left of the first centre and clamps to s0.
  w = antialiased_bilinear_weights(4, 8)
  np.testing.assert_allclose(w[1], [0.75, 0.25, 0, 0], atol=1e-7)
  np.testing.assert_array_equal(w[0], [1, 0, 0, 0])
  # 16 -> 1: one output averages the whole table with a triangle of radius 16.
  d = np.abs(np.arange(16) + 0.5 - 8) / 16
  np.testing.assert_allclose(antialiased_bilinear_weights(16, 1)[0], (1 - d) / (1 - d).sum(),
                             atol=1e-7)


def _torch_resize(table, h, w, channels_last=False):
  torch = pytest.importorskip("torch")
  import torch.nn.functional as F
  x = torch.from_numpy(np.ascontiguousarray(table.transpose(2, 0, 1)))[None]  # [1, C, 16, 16]
  if channels_last:
    x = x.contiguous(memory_format=torch.channels_last)
  y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
  return y[0].numpy().transpose(1, 2, 0)  # [h, w, C]


def _torch_cpu_quirk(h, w):
  """torch's CPU kernel on NCHW input with output width 1 (and an H' that is neither 1 nor the
  input's 16) copies output row 0 into every row; channels-last input gives the true resize."""
  return w == 1 and h not in (1, 16)


@pytest.mark.parametrize("h", SIZES)
def test_separable_resize_matches_torch(h):
  rng = np.random.default_rng(h)
  table = rng.normal(size=(16, 16, 8)).astype(np.float32)
  for w in SIZES:
    ours = np.einsum("hr,rcd,wc->hwd", antialiased_bilinear_weights(16, h), table,
                     antialiased_bilinear_weights(16, w))
    np.testing.assert_allclose(ours, _torch_resize(table, h, w, channels_last=True), rtol=0,
                               atol=1e-6, err_msg=f"{h}x{w}")
    if not _torch_cpu_quirk(h, w):
      np.testing.assert_allclose(ours, _torch_resize(table, h, w), rtol=0, atol=1e-6,
                                 err_msg=f"{h}x{w}")


def test_torch_cpu_width_one_quirk_is_not_reproduced():
  # Documents a torch CPU quirk we deliberately do not copy (see _torch_cpu_quirk).
  table = np.random.default_rng(0).normal(size=(16, 16, 4)).astype(np.float32)
  quirky = _torch_resize(table, 5, 1)
  if not np.allclose(quirky, quirky[:1]):
    pytest.skip("this torch build resizes [16, 16] -> [5, 1] correctly")
  ours = np.einsum("hr,rcd,wc->hwd", antialiased_bilinear_weights(16, 5), table,
                   antialiased_bilinear_weights(16, 1))
  np.testing.assert_allclose(ours[:1], quirky[:1], atol=1e-6)  # row 0 agrees
  assert not np.allclose(ours, quirky, atol=1e-3)  # the other rows are the true resize


@pytest.mark.parametrize("in_size", [1, 3, 7, 16, 64])
def test_one_dimensional_weights_equal_torch_bitwise(in_size):
  torch = pytest.importorskip("torch")
  import torch.nn.functional as F
  for out_size in range(1, 101):
    # Resize the unit vectors along H (W = 2 keeps torch off its degenerate 1-wide path).
    x = torch.eye(in_size)[:, None, :, None].expand(in_size, 1, in_size, 2).contiguous()
    y = F.interpolate(x, size=(out_size, 2), mode="bilinear", align_corners=False,
                      antialias=True)
    np.testing.assert_array_equal(antialiased_bilinear_weights(in_size, out_size),
                                  y[:, 0, :, 0].numpy().T, err_msg=f"{in_size}->{out_size}")


@pytest.mark.parametrize("extent", [(1, 1), (1, 9), (3, 5), (7, 16), (16, 16), (17, 31),
                                    (64, 20), (100, 3), (41, 41)])
def test_gathered_embedding_equals_torch_resize_then_gather(extent):
  rng = np.random.default_rng(sum(extent))
  table = rng.normal(size=(16, 16, 12)).astype(np.float32)
  h, w = extent
  n = 40
  rows, cols = rng.integers(0, h, n), rng.integers(0, w, n)
  rows[0], cols[1] = h - 1, w - 1  # the extents are maxima over the tokens
  coords = np.stack([rng.integers(0, 4, n), rows, cols, rng.integers(0, 64, n)], axis=1)
  row_w, col_w = position_weights(coords)
  assert row_w.shape == col_w.shape == (n, 16) and row_w.dtype == np.float32
  ours = gather_position_embedding(table, row_w, col_w)
  ref = _torch_resize(table, h, w, channels_last=True)[rows, cols]
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_extent_is_max_plus_one_not_a_count():
  coords = np.array([[0, 20, 3, 0], [0, 40, 5, 0]])  # 2 tokens, rows up to 40 -> H' = 41
  row_w, col_w = position_weights(coords)
  np.testing.assert_array_equal(row_w, antialiased_bilinear_weights(16, 41)[[20, 40]])
  np.testing.assert_array_equal(col_w, antialiased_bilinear_weights(16, 6)[[3, 5]])


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 4), np.int32), "n >= 1"),
    (np.zeros((3, 3), np.int32), "n >= 1, 4"),
    (np.array([[0, -1, 0, 0]]), "non-negative"),
])
def test_bad_coords_raise(bad, message):
  with pytest.raises(ValueError, match=message):
    position_weights(bad)
  with pytest.raises(ValueError, match="sizes must be >= 1"):
    antialiased_bilinear_weights(16, 0)
