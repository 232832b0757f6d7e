"""User-path batching (atoken_jax.row_plan): the rung ladder, padding per call, every sample once,
bounded compiled shapes, and the Tokenizer's outputs unchanged by how samples are split."""
import numpy as np
import pytest

import atoken_jax as aj
from atoken_jax import attention_blocks, row_plan, tokens

# 0.15 of the computed tokens is the budget the user path promises (README, "Compiled shapes").
PADDING_BUDGET = 0.15


def test_rung_is_the_smallest_ladder_length_at_or_above_n():
  ladder = row_plan.rungs_between(1, 1 << 15)
  assert ladder[:16] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20]
  assert 96 in ladder and 256 in ladder and 255 not in ladder
  for n in range(1, 1 << 15):
    r = row_plan.rung(n)
    assert r >= n and r in ladder
    assert ladder[ladder.index(r) - 1] < n if r > 1 else True
    assert 1 - n / r <= row_plan.MAX_PADDING + 1e-12
  # six rungs per octave: 37 lengths from 64 to 4,096 tokens
  assert len(row_plan.rungs_between(64, 4096)) == 37
  # long rows stay aligned: a rung >= 2^k is a multiple of 2^(k-3)
  assert all(r % (1 << max(r.bit_length() - 4, 0)) == 0 for r in ladder)
  with pytest.raises(ValueError, match="n >= 1"):
    row_plan.rung(0)


def _check_plan(lengths, calls, max_call_tokens, max_samples_per_row):
  placed = sorted(i for c in calls for row in c.rows for i in row)
  assert placed == list(range(len(lengths)))  # every sample exactly once
  for c in calls:
    b, length, slots = c.shape
    fills = [sum(lengths[i] for i in row) for row in c.rows]
    assert max(fills) <= length and max(len(r) for r in c.rows) <= min(slots,
                                                                        max_samples_per_row)
    assert slots in (1, 4, 16, 64, 256, max_samples_per_row)
    assert b * length <= max_call_tokens or b == 1
    assert 1 - sum(fills) / (b * length) <= PADDING_BUDGET, (lengths, c)


@pytest.mark.parametrize("max_row_len", [0, 4096, 1 << 14])
def test_every_call_pads_at_most_15_percent(max_row_len):
  rng = np.random.default_rng(0)
  cases = [[n] for n in range(1, 3000, 7)]  # single samples of every size class
  for _ in range(300):  # batch mixes: images, clips, tiny and huge samples together
    k = int(rng.integers(1, 40))
    kind = rng.integers(3)
    if kind == 0:
      lengths = rng.integers(1, 5000, k)
    elif kind == 1:
      lengths = np.prod(rng.integers(2, 64, (k, 2)), axis=1)  # (H/16) x (W/16) photos
    else:
      lengths = np.where(rng.random(k) < 0.5, rng.integers(1, 40, k), rng.integers(2000, 9000, k))
    cases.append([int(n) for n in lengths])
  for lengths in cases:
    calls = row_plan.plan(lengths, max_row_len=max_row_len, max_samples_per_row=16,
                          max_call_tokens=1 << 14)
    _check_plan(lengths, calls, 1 << 14, 16)
    assert row_plan.padding_fraction(lengths, calls) <= PADDING_BUDGET


def test_short_samples_share_rows_that_fit_them():
  # a 96-token image runs as 96 tokens, not 256
  assert [c.shape for c in row_plan.plan([96])] == [(1, 96, 1)]
  # segment-aware attention: 16 images of 256 tokens fill one row of 4,096
  assert [c.shape for c in row_plan.plan([256] * 16, max_row_len=1 << 14)] == [(1, 4096, 16)]
  # dense-cost attention: rows stay at the longest sample's rung
  assert [c.shape for c in row_plan.plan([256] * 16)] == [(16, 256, 1)]
  # a big and a small sample: the small one does not make a second 1,024-token row
  calls = row_plan.plan([1000, 100])
  assert sorted(c.shape for c in calls) == [(1, 112, 1), (1, 1024, 1)]
  with pytest.raises(ValueError, match="at least one sample"):
    row_plan.plan([])


def _seq(n):
  return tokens.TokenSeq(patches=np.full((n, 3072), n, np.float32),
                         coords=np.stack([np.zeros(n), np.arange(n) // 8, np.arange(n) % 8,
                                          np.zeros(n)], 1).astype(np.int32),
                         kind="image", frames=1, grid=(1, -(-n // 8), 8))


def test_pack_call_builds_exactly_the_planned_rows():
  rng = np.random.default_rng(1)
  for _ in range(40):
    lengths = [int(n) for n in rng.integers(1, 300, int(rng.integers(1, 25)))]
    seqs = [_seq(n) for n in lengths]
    calls = row_plan.plan(lengths, max_row_len=int(rng.choice([0, 500, 1000])),
                          max_samples_per_row=int(rng.choice([2, 5, 64])),
                          max_call_tokens=int(rng.choice([256, 4096])))
    for call in calls:
      batch = row_plan.pack_call(seqs, call)  # raises if first fit strays from the plan
      assert batch.segment_ids.shape == call.shape[:2]
      assert batch.sample_index.shape == (len(call.rows), call.slots)
      for r, row in enumerate(call.rows):  # each sample's own tokens, in its planned row
        start = 0
        for i in row:
          np.testing.assert_array_equal(batch.patches[r, start:start + lengths[i], 0], lengths[i])
          start += lengths[i]
        assert not batch.segment_ids[r, start:].any()


# A typical folder of photos: camera / phone / web sizes after the centre crop to multiples of 16.
PHOTO_SIDES = [(480, 640), (640, 480), (600, 800), (768, 1024), (720, 1280), (1080, 1920),
               (512, 512), (1024, 1024), (683, 1024), (1024, 683), (427, 640), (640, 427),
               (375, 500), (500, 375), (333, 500), (500, 333), (2048, 1536), (3024, 4032)]


def _photo_tokens(n, seed):
  rng = np.random.default_rng(seed)
  sides = [PHOTO_SIDES[i] for i in rng.integers(0, len(PHOTO_SIDES), n)]
  return [(h // 16) * (w // 16) for h, w in sides]


def _table_shape(call, lengths):
  """The block table's shape that the Tokenizer's fitted table gives this call (CPU blocks);
  photos are one attention group each."""
  seg = np.zeros(call.shape[:2], np.int32)
  for r, row in enumerate(call.rows):
    bounds = np.cumsum([0] + [lengths[i] for i in row])
    for g, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
      seg[r, a:b] = g + 1
  return attention_blocks.fitted_table(seg, attention_blocks.call_blocks("cpu"))[
      "attn_pairs"].shape


def folder_shapes(lengths, batch, max_row_len):
  """Distinct (B, L, S, block table) compiled when `lengths` are encoded `batch` at a time."""
  return {c.shape + _table_shape(c, lengths[a:a + batch]) for a in range(0, len(lengths), batch)
          for c in row_plan.plan(lengths[a:a + batch], max_row_len=max_row_len)}


def test_a_folder_of_photos_compiles_few_shapes():
  """The counts README's "Compiled shapes" quotes: 200 photos drawn from 18 common sizes."""
  lengths = _photo_tokens(200, seed=0)
  assert len(set(lengths)) == 13  # some sizes share a token count (480x640, 640x480)
  one_by_one = folder_shapes(lengths, 1, 0)
  assert len(one_by_one) <= 18  # one shape per distinct photo size at most, often fewer
  assert len({row_plan.rung(n) for n in lengths}) == len(one_by_one)
  for max_row_len in (0, 1 << 14):
    # the whole folder in one encode call (atoken tokenize DIR/*): fewer shapes than photo sizes
    assert len(folder_shapes(lengths, len(lengths), max_row_len)) <= len(one_by_one) // 2
    for batch in (8, 32):  # mixed batches add row counts, still a bounded few per row length
      assert len(folder_shapes(lengths, batch, max_row_len)) <= 3 * len(one_by_one)


def test_jit_compiles_once_per_planned_shape():
  """The shapes the plan names are the jit cache entries that encoding creates."""
  tok = aj.Tokenizer.init_random("tiny", seed=0)
  from atoken_jax import tokenizer as tokenizer_lib
  fn = tokenizer_lib._encode_jit(tok.cfg, "mean")  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  # 10x10 and 10x11 tokens share rung 112; 5x5 = 25 tokens runs as 28
  images = [rng.uniform(-1, 1, (h, w, 3)).astype(np.float32)
            for h, w in ((160, 160), (160, 176), (80, 80), (160, 160))]
  before = fn._cache_size()  # pylint: disable=protected-access
  shapes = set()
  for img in images:
    shapes |= {c.shape for c in tok.plan([tokens.to_tokens(img)])}
    tok.encode([img])
  assert shapes == {(1, 112, 1), (1, 28, 1)}
  assert fn._cache_size() - before == len(shapes)  # pylint: disable=protected-access


def test_outputs_do_not_depend_on_how_samples_are_split_into_calls():
  """A mix that spans several calls (small call budget) equals each sample encoded alone."""
  base = aj.Tokenizer.init_random("tiny", seed=0)
  split = aj.Tokenizer(base.cfg, base.params, max_row_len=64, max_call_tokens=64,
                       max_samples_per_row=2)
  rng = np.random.default_rng(5)
  inputs = [rng.uniform(-1, 1, s).astype(np.float32)
            for s in ((48, 64, 3), (16, 16, 3), (8, 32, 32, 3), (96, 80, 3), (32, 32, 3))]
  seqs = [tokens.to_tokens(x) for x in inputs]
  assert len(split.plan(seqs)) >= 3
  together = split.encode(inputs)
  rec = split.decode(together)
  for i, x in enumerate(inputs):
    alone = base.encode([x])
    np.testing.assert_allclose(together[i].latent, alone[0].latent, atol=1e-5)
    np.testing.assert_allclose(together.pooled[i], alone.pooled[0], atol=1e-5)
    np.testing.assert_allclose(rec[i], base.decode(alone)[0], atol=1e-5)
