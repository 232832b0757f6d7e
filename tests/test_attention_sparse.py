"""Block-sparse attention: the host block table lists exactly the block pairs that share an
attention group, and attention over those pairs equals dense masked attention (values and
gradients) for segments, the decoder's KV cache across tiles, and 3D windows."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atoken_jax import attention_blocks, config, packing, tokens
from atoken_jax import batch as batch_lib
from atoken_jax.model import atoken, attention, block_sparse, splash
from atoken_jax.model import gaussian_decoder as gd
from atoken_jax.tokenizer import init_params


def _qkv(b, length, h=2, d=8, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [jax.random.normal(k, (b, length, h, d)) for k in keys]


def _assert_equal_to_dense(info, mask_fn, table, valid, softcap=None, impl="block_sparse"):
  """Values and q/k/v gradients at the queries that see a key (`valid` [B, L])."""
  b, n = valid.shape
  q, k, v = _qkv(b, n)
  w = jnp.asarray(valid)[..., None, None]

  def dense(q, k, v):
    return attention.dense_attention(q, k, v, mask_fn(info, info), softcap)

  def sparse(q, k, v):
    if impl == "splash":
      return splash.splash_attention(q, k, v, info, info, mask_fn, softcap)
    pairs, n_blocks = jnp.asarray(table["attn_pairs"]), table["attn_kv_counts"].shape[1]
    return block_sparse.block_sparse_attention(q, k, v, info, info, mask_fn, pairs, n_blocks,
                                               softcap)

  out_s = jax.jit(sparse)(q, k, v)
  assert np.isfinite(np.asarray(out_s)).all()
  np.testing.assert_allclose(np.where(w, out_s, 0), np.where(w, dense(q, k, v), 0),
                             rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda *a: jnp.sum(jnp.where(w, jnp.sin(3 * f(*a)), 0))
  g_d = jax.grad(loss(dense), argnums=(0, 1, 2))(q, k, v)
  g_s = jax.jit(jax.grad(loss(sparse), argnums=(0, 1, 2)))(q, k, v)
  for a, b in zip(g_s, g_d):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _segments(lengths_per_row, row_len):
  seg = np.zeros((len(lengths_per_row), row_len), np.int32)
  for r, lengths in enumerate(lengths_per_row):
    at = 0
    for i, n in enumerate(lengths):
      seg[r, at:at + n] = i + 1
      at += n
  return seg


def _dense_live_blocks(mask: np.ndarray, block_len: int) -> np.ndarray:
  """[L, L] token mask -> [nb, nb] block has an allowed pair (brute force)."""
  n = mask.shape[0]
  nb = -(-n // block_len)
  padded = np.zeros((nb * block_len, nb * block_len), bool)
  padded[:n, :n] = mask
  return padded.reshape(nb, block_len, nb, block_len).any((1, 3))


def _table_pairs(table, r):
  p = table["attn_pairs"][r].reshape(-1, 2)
  return {tuple(x) for x in p[p[:, 0] >= 0]}


SEGMENT_ROWS = [[1, 37, 1, 1, 50], [100], [5, 1, 20], [16, 16, 16, 16, 16, 16]]


@pytest.mark.parametrize("block_len", [16, 32])
@pytest.mark.parametrize("softcap", [None, 30.0])
def test_block_sparse_equals_dense_on_packed_segments(block_len, softcap):
  # 1-token segments, a segment filling the row, trailing padding, block-aligned segments;
  # L = 100 is not a multiple of the block.
  seg = _segments(SEGMENT_ROWS, 100)
  table = attention_blocks.block_table(seg, block_len)
  mask_fn = lambda a, b: attention.same_group(a["segment_ids"], b["segment_ids"])
  _assert_equal_to_dense({"segment_ids": jnp.asarray(seg)}, mask_fn, table, seg > 0, softcap)


def test_block_table_lists_exactly_the_blocks_that_share_a_segment():
  rng = np.random.default_rng(1)
  rows = [list(rng.integers(1, 60, rng.integers(1, 12))) for _ in range(6)] + SEGMENT_ROWS
  seg = _segments([r if sum(r) <= 400 else r[:3] for r in rows], 400)
  table = attention_blocks.block_table(seg, 32)
  assert table["attn_kv_counts"].shape[1] == 16  # 400 = 16 blocks of 25, the divisor <= 32
  for r in range(len(seg)):
    mask = (seg[r][:, None] == seg[r][None, :]) & (seg[r][:, None] > 0)
    live = _dense_live_blocks(mask, 25)
    assert _table_pairs(table, r) == set(zip(*np.nonzero(live)))
    np.testing.assert_array_equal(table["attn_kv_counts"][r], live.sum(1))
    for chunk in table["attn_pairs"][r]:  # a chunk's query blocks are distinct
      q = chunk[chunk[:, 0] >= 0, 0]
      assert len(set(q.tolist())) == len(q)
  needed = attention_blocks.pairs_needed(seg)
  computed = attention_blocks.pairs_computed(table, 400)
  assert needed <= computed < 400 ** 2 * len(seg)


def test_block_table_shape_depends_only_on_the_batch_shape():
  one_segment = attention_blocks.block_table(_segments([[400], [400]], 400), 32)  # worst case
  small = attention_blocks.block_table(_segments([[3, 5], [1]], 400), 32)
  assert one_segment["attn_pairs"].shape == small["attn_pairs"].shape == (2, 16, 16, 2)
  assert (one_segment["attn_pairs"] >= 0).all()  # the capacity is exactly the worst case
  assert attention_blocks.live_chunks(small["attn_pairs"]).tolist() == [1, 1]


def test_fitted_table_narrows_chunks_of_rows_mixing_one_large_sample_with_small_ones():
  # one 64-token sample beside 1-20-token ones: at the default width every chunk spans all 16
  # query blocks although only the large sample's 4 need 4 chunks
  small = [3, 5, 12, 1, 7, 9, 2, 11, 4, 6, 8, 10]
  seg = _segments([[64] + small * 2 + [20, 16], [64, 30, 20, 10, 1, 1]], 256)
  default = attention_blocks.block_table(seg, 16)
  fitted = attention_blocks.fitted_table(seg, (16, 8))
  needed = attention_blocks.pairs_needed(seg)
  assert needed <= attention_blocks.pairs_computed(fitted, 256) <= 0.6 * (
      attention_blocks.pairs_computed(default, 256))
  block = 256 // fitted["attn_kv_counts"].shape[1]
  for r in range(len(seg)):  # still every live block pair, each once, query blocks distinct
    mask = (seg[r][:, None] == seg[r][None, :]) & (seg[r][:, None] > 0)
    listed = fitted["attn_pairs"][r].reshape(-1, 2)
    listed = [tuple(x) for x in listed[listed[:, 0] >= 0]]
    assert sorted(listed) == sorted(zip(*np.nonzero(_dense_live_blocks(mask, block))))
    for chunk in fitted["attn_pairs"][r]:
      q = chunk[chunk[:, 0] >= 0, 0]
      assert len(set(q.tolist())) == len(q)
  mask_fn = lambda a, b: attention.same_group(a["segment_ids"], b["segment_ids"])
  _assert_equal_to_dense({"segment_ids": jnp.asarray(seg)}, mask_fn, fitted, seg > 0)


def test_fitted_table_keeps_the_default_where_it_is_already_tight():
  seg = _segments([[128], [100, 28]], 128)  # one sample per row: every query block is full
  fitted = attention_blocks.fitted_table(seg, (16, 8))
  default = attention_blocks.block_table(seg, 16)
  np.testing.assert_array_equal(fitted["attn_pairs"], default["attn_pairs"])


def _video_batch(cache_frames, block_len=16):
  rng = np.random.default_rng(0)
  clips = [np.tanh(rng.normal(size=(t, 32, 48, 3))).astype(np.float32) for t in (28, 9, 20)]
  seqs = [tokens.to_tokens(c) for c in clips] + [tokens.to_tokens(
      np.tanh(rng.normal(size=(16, 16, 3))).astype(np.float32))]
  return packing.pack(seqs, 160, 4, num_rows=2, tile_latent_frames=2, block_len=block_len,
                      kv_cache_frames=cache_frames)


SPLASH = pytest.param("splash", marks=pytest.mark.slow)  # Pallas interpret mode: ~1 min each


@pytest.mark.parametrize("impl", ["block_sparse", SPLASH])
def test_kv_cache_tiles_equal_dense(impl):
  batch = _video_batch(cache_frames=1)
  info = {k: jnp.asarray(getattr(batch, k)) for k in batch_lib.MASK_FIELDS}
  mask_fn = functools.partial(atoken.tile_cache_mask, cache_frames=1, tile_frames=2)
  table = {k: getattr(batch, k) for k in attention_blocks.TABLE_KEYS}
  mask = np.asarray(mask_fn(info, info))
  for r in range(2):  # the table is exactly the blocks with an allowed pair
    live = _dense_live_blocks(mask[r] & (batch.segment_ids[r] > 0)[:, None], 16)
    assert _table_pairs(table, r) == set(zip(*np.nonzero(live)))
  assert (batch.tile_index > 0).any()  # the cache pairs are exercised
  _assert_equal_to_dense(info, mask_fn, table, batch.segment_ids > 0, impl=impl)


def test_splash_equals_dense_on_packed_segments_in_interpret_mode():
  # L = 100 is padded to 128 inside; 1-token segments, a row-filling segment, padding
  seg = _segments([[1, 37, 1, 1, 50], [100]], 100)
  mask_fn = lambda a, b: attention.same_group(a["segment_ids"], b["segment_ids"])
  _assert_equal_to_dense({"segment_ids": jnp.asarray(seg)}, mask_fn, None, seg > 0,
                         softcap=30.0, impl="splash")


@pytest.mark.slow
def test_splash_equals_dense_on_shifted_3d_windows():
  cfg = config.gaussian_decoder_config("tiny", window=4, resolution=16)
  coords, valid = _voxels()
  mask_fn = lambda a, b: attention.same_group(a["w"], b["w"])
  ids = gd.window_ids(coords, valid, cfg, cfg.window // 2)
  _assert_equal_to_dense({"w": jnp.asarray(ids)}, mask_fn, None, ids > 0, softcap=30.0,
                         impl="splash")


def _voxels(n=150):
  rng = np.random.default_rng(0)
  coords = np.stack([rng.choice(16 ** 3, n, replace=False) for _ in range(2)])
  coords = np.stack(np.unravel_index(coords, (16, 16, 16)), -1).astype(np.int32)
  return coords, np.arange(n)[None] < np.array([[n], [120]])


def test_shifted_3d_windows_block_sparse_equals_dense_with_softcap():
  cfg = config.gaussian_decoder_config("tiny", window=4, resolution=16)
  coords, valid = _voxels()
  n = coords.shape[1]
  for parity, shift in (("even", 0), ("odd", cfg.window // 2)):
    ids = gd.window_ids(coords, valid, cfg, shift)
    order = np.argsort(np.where(ids > 0, ids, np.iinfo(np.int32).max), axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, 1)  # windows contiguous, as a host packer lays them
    mask_fn = lambda a, b: attention.same_group(a["w"], b["w"])
    table = attention_blocks.block_table(ids, 16)
    _assert_equal_to_dense({"w": jnp.asarray(ids)}, mask_fn, table, ids > 0, softcap=30.0)
    # voxel order (windows scattered): the full table is exact too
    ids = gd.window_ids(coords, valid, cfg, shift)
    _assert_equal_to_dense({"w": jnp.asarray(ids)}, mask_fn,
                           attention_blocks.full_table(2, n, 16), ids > 0, softcap=30.0)
    del parity


def test_padding_queries_outside_every_group_return_zero():
  seg = _segments([[10], [40]], 64)
  table = attention_blocks.block_table(seg, 16)
  assert table["attn_kv_counts"][0, 1:].sum() == 0  # blocks of pure padding visit nothing
  q, k, v = _qkv(2, 64)
  mask_fn = lambda a, b: attention.same_group(a["s"], b["s"])
  info = {"s": jnp.asarray(seg)}
  out = block_sparse.block_sparse_attention(q, k, v, info, info, mask_fn,
                                            jnp.asarray(table["attn_pairs"]), 4)
  np.testing.assert_array_equal(np.asarray(out)[0, 16:], 0.0)


def test_model_block_sparse_equals_dense_values_and_gradients_with_kv_cache():
  cfg = config.model_config("tiny", decoder_kv_cache_frames=1, tile_latent_frames=2,
                            scan_layers=True)
  batch = _video_batch(cache_frames=1)
  inputs = jax.tree.map(jnp.asarray, batch.for_model())
  params = init_params(cfg, jax.random.key(0))
  valid = jnp.asarray(batch.segment_ids > 0)[..., None]

  def loss(p, impl):
    out = atoken.AToken(cfg.replace(attention_impl=impl)).apply({"params": p}, inputs, "mean")
    rec = jnp.where(valid, out["reconstruction"], 0)
    return jnp.sum(jnp.sin(rec)) + jnp.sum(out["pooled"] ** 2), rec

  grad = lambda impl: jax.jit(jax.value_and_grad(lambda p: loss(p, impl), has_aux=True))
  (l_d, rec_d), g_d = grad("dense")(params)
  (l_s, rec_s), g_s = grad("block_sparse")(params)
  np.testing.assert_allclose(rec_s, rec_d, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(l_s, l_d, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_s), jax.tree.leaves(g_d)):  # float32 rounding of each leaf
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * float(np.abs(b).max()))


def test_batch_stats_report_computed_over_needed_attention_pairs():
  from atoken_jax.train import metrics
  batch = _video_batch(cache_frames=0)
  sparse, dense = metrics.batch_stats(batch, "auto"), metrics.batch_stats(batch, "dense")
  assert sparse["attn_pairs"] == dense["attn_pairs"] == attention_blocks.pairs_needed(
      batch.segment_ids)
  assert dense["attn_pairs_computed"] == 2 * 160 ** 2
  assert sparse["attn_pairs"] <= sparse["attn_pairs_computed"] < dense["attn_pairs_computed"]


def test_attention_impl_is_validated():
  with pytest.raises(ValueError, match="attention_impl"):
    config.model_config("tiny", attention_impl="flash")
  assert attention.resolve_impl("auto", "cpu") == attention.resolve_impl("auto", "gpu") == (
      "block_sparse")
  assert attention.resolve_impl("auto", "tpu") == "splash"
