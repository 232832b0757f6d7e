"""The user-level Tokenizer: batching invariance, temporal tiles, FSQ, KV cache, bad inputs."""
import numpy as np
import pytest

import atoken_jax as aj


@pytest.fixture(scope="module")
def tok():
  return aj.Tokenizer.init_random("tiny", seed=0)


def _u(rng, *shape):
  return rng.uniform(-1, 1, shape).astype(np.float32)


def test_batch_composition_does_not_change_any_sample(tok):
  rng = np.random.default_rng(0)
  img, vid = _u(rng, 40, 50, 3), _u(rng, 9, 32, 48, 3)
  vox = aj.Voxels(np.stack(np.unravel_index(rng.choice(64 ** 3, 30, replace=False),
                                            (64,) * 3), -1),
                  rng.uniform(0, 1, (30, 768)).astype(np.float32))
  together = tok.encode([img, vid, vox])
  for i, x in enumerate([img, vid, vox]):
    alone = tok.encode([x])
    for k in ("features", "mean", "logvar", "latent"):
      np.testing.assert_allclose(getattr(alone[0], k), getattr(together[i], k), atol=1e-5)
    np.testing.assert_allclose(alone.pooled[0], together.pooled[i], atol=1e-5)
  assert together[0].features.shape == (2 * 3, 64)   # 40x50 -> crop 32x48 -> 2x3 tokens
  assert together[1].mean.shape == (2 * 2 * 3, 48)   # 9 frames -> 8 -> 2 latent frames
  np.testing.assert_allclose(np.linalg.norm(together.embedding, axis=-1), 1.0, rtol=1e-5)
  rec = tok.decode(together)
  assert rec.pixels(0).shape == (32, 48, 3) and rec.pixels(1).shape == (8, 32, 48, 3)
  assert rec.pixels(2).feats.shape == (30, 768)


def test_video_tiles_are_encoded_independently(tok):
  """A 48-frame video = 3 tiles of 16 frames; per-token outputs equal each clip's alone."""
  rng = np.random.default_rng(1)
  vid = _u(rng, 48, 32, 32, 3)
  whole = tok.encode([vid])
  clips = tok.encode([vid[16 * i:16 * (i + 1)] for i in range(3)])
  per_tile = np.concatenate([c.features for c in clips.samples])
  np.testing.assert_allclose(whole[0].features, per_tile, atol=1e-5)
  rec = tok.decode(whole).pixels(0)
  rec_clips = np.concatenate([r for r in (tok.decode(clips).pixels(i) for i in range(3))])
  np.testing.assert_allclose(rec, rec_clips, atol=1e-5)
  # the pooling head sees every tile: not the pooled output of any single clip
  assert np.abs(whole.pooled[0] - clips.pooled).min(axis=-1).max() > 1e-4


def test_posterior_sample_is_seeded_and_centred_on_the_mean(tok):
  img = _u(np.random.default_rng(2), 64, 64, 3)
  a = tok.encode([img], posterior="sample", seed=1)
  b = tok.encode([img], posterior="sample", seed=1)
  c = tok.encode([img], posterior="sample", seed=2)
  np.testing.assert_array_equal(a[0].latent, b[0].latent)
  assert np.abs(a[0].latent - c[0].latent).max() > 0
  np.testing.assert_array_equal(tok.encode([img])[0].latent, a[0].mean)


def test_fsq_model_emits_codes_and_indices():
  tok = aj.Tokenizer.init_random("tiny", quantizer="fsq")
  enc = tok.encode([_u(np.random.default_rng(3), 32, 64, 3)])
  s = enc[0]
  assert s.indices.shape == (8, 8) and s.indices.dtype == np.int32
  np.testing.assert_array_equal(s.latent, s.codes)
  from atoken_jax.model.bottleneck import FSQ
  np.testing.assert_array_equal(np.asarray(FSQ().indices_to_codes(s.indices)), s.codes)


def test_decoder_kv_cache_reaches_back_one_tile_only():
  rng = np.random.default_rng(4)
  vid = _u(rng, 48, 32, 32, 3)
  base = aj.Tokenizer.init_random("tiny", seed=0)
  cached = aj.Tokenizer(base.cfg.replace(decoder_kv_cache_frames=2), base.params)
  enc = base.encode([vid])
  n = len(enc[0].latent) // 3  # tokens per tile

  def decode(tk, latent):
    enc[0].latent = latent
    return tk.decode(enc)[0]

  lat = enc[0].latent.copy()
  for tk, tile1_sees_tile0 in ((base, False), (cached, True)):
    ref = decode(tk, lat.copy())
    bumped0 = lat.copy()
    bumped0[:n] += 1.0
    bumped2 = lat.copy()
    bumped2[2 * n:] += 1.0
    out0, out2 = decode(tk, bumped0), decode(tk, bumped2)
    assert (np.abs(out0[n:2 * n] - ref[n:2 * n]).max() > 1e-4) == tile1_sees_tile0
    np.testing.assert_allclose(out2[:2 * n], ref[:2 * n], atol=1e-5)  # never looks ahead
  # tile 0 has nothing cached before it: identical with and without the cache
  np.testing.assert_allclose(decode(cached, lat.copy())[:n], decode(base, lat.copy())[:n],
                             atol=1e-5)


@pytest.mark.parametrize("bad, msg", [
    ([], "non-empty"),
    (np.zeros((32, 32, 3), np.float32), "list"),
    ([np.zeros((32, 32), np.float32)], "rank|dimension|\\[H, W, 3\\]"),
    ([np.zeros((32, 32, 4), np.float32)], "3"),
    ([np.zeros((8, 32, 3), np.float32)], "16"),
    ([np.full((32, 32, 3), np.nan, np.float32)], "finite|NaN"),
    ([np.zeros((32, 32, 3), np.uint8)], "127.5"),
])
def test_bad_inputs_get_one_clear_value_error(tok, bad, msg):
  with pytest.raises(ValueError, match=msg):
    tok.encode(bad)
  with pytest.raises(ValueError, match="posterior"):
    tok.encode([np.zeros((32, 32, 3), np.float32)], posterior="mode")
