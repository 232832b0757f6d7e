"""SigLIP2 text tower: our Flax port equals Hugging Face's Siglip2TextModel on a tiny random
config, with and without padding, with and without an attention mask."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atoken_jax.interop import siglip2_text as text_interop
from atoken_jax.text import siglip2_text

torch = pytest.importorskip("torch")

VOCAB, MAX_LEN = 97, 16


def _randomise(model):
  with torch.no_grad():  # HF zero-initialises biases; make every weight matter
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))


@pytest.fixture(scope="module")
def hf_text(tmp_path_factory):
  """A full Siglip2Model (text + vision halves) saved as an HF directory, and its text model."""
  transformers = pytest.importorskip("transformers")
  text_cfg = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=MAX_LEN, projection_size=24,
                  layer_norm_eps=1e-6, bos_token_id=None, eos_token_id=1, pad_token_id=0)
  cfg = transformers.Siglip2Config(
      text_config=text_cfg, vision_config=dict(hidden_size=32, intermediate_size=48,
                                               num_hidden_layers=1, num_attention_heads=4))
  torch.manual_seed(0)
  model = transformers.Siglip2Model(cfg).eval()
  _randomise(model)
  path = tmp_path_factory.mktemp("siglip2_full")
  model.save_pretrained(path)
  return model, path


def _ids(lengths, total, seed=0):
  """Captions of the given lengths (ids >= 2, then EOS = 1), padded with 0 to `total`."""
  rng = np.random.default_rng(seed)
  ids = np.zeros((len(lengths), total), np.int64)
  for i, n in enumerate(lengths):
    ids[i, :n - 1] = rng.integers(2, VOCAB, n - 1)
    ids[i, n - 1] = 1
  return ids


def _hf(model, ids, mask=None):
  with torch.no_grad():
    out = model.text_model(input_ids=torch.from_numpy(ids),
                           attention_mask=None if mask is None else torch.from_numpy(mask))
  return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def _abstract_params(cfg, length=MAX_LEN):
  """The parameter tree of `cfg` as ShapeDtypeStructs (nothing is compiled or run)."""
  ids = jax.ShapeDtypeStruct((1, length), jnp.int32)
  return nn.unbox(jax.eval_shape(siglip2_text.TextEncoder(cfg).init, jax.random.key(0), ids))[
      "params"]


def _ours(cfg, params, ids, valid=None):
  out = jax.jit(siglip2_text.TextEncoder(cfg).apply)(
      {"params": params}, jnp.asarray(ids, jnp.int32), valid)
  return np.asarray(out["hidden"]), np.asarray(out["pooled"])


@pytest.mark.parametrize("lengths,total", [([MAX_LEN] * 2, MAX_LEN), ([3, 9, MAX_LEN], MAX_LEN),
                                           ([2, 5], 7)])
def test_unmasked_padded_text_equals_hf(hf_text, lengths, total):
  """As SigLIP2 is trained: pads attend, the last position (pad or EOS) is pooled."""
  model, path = hf_text
  cfg, params, _ = text_interop.load_siglip2_text(path)
  ids = _ids(lengths, total)
  hidden, pooled = _ours(cfg, params, ids)
  hf_hidden, hf_pooled = _hf(model, ids)
  np.testing.assert_allclose(hidden, hf_hidden, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(pooled, hf_pooled, rtol=1e-5, atol=1e-5)


def test_masked_padded_text_equals_hf_with_attention_mask(hf_text):
  model, path = hf_text
  cfg, params, _ = text_interop.load_siglip2_text(path)
  ids = _ids([3, 9, MAX_LEN], MAX_LEN, seed=1)
  mask = (ids != 0).astype(np.int64)
  hidden, pooled = _ours(cfg, params, ids, jnp.asarray(mask, bool))
  hf_hidden, hf_pooled = _hf(model, ids, mask)
  np.testing.assert_allclose(hidden, hf_hidden, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(pooled, hf_pooled, rtol=1e-5, atol=1e-5)
  # and the mask matters: without it the padded captions embed differently
  assert not np.allclose(pooled[0], _ours(cfg, params, ids)[1][0], atol=1e-3)


def test_text_model_state_dict_and_full_checkpoint_import_alike(hf_text):
  """A bare Siglip2TextModel state dict (no prefix) and the full model's directory agree; the
  full checkpoint also yields logit_scale / logit_bias and the config's head count."""
  model, path = hf_text
  cfg_dir, params_dir, extras = text_interop.load_siglip2_text(path)
  state = {k: v.numpy() for k, v in model.text_model.state_dict().items()}
  assert not any(k.startswith("text_model.") for k in state)
  cfg_sd, params_sd, extras_sd = text_interop.load_siglip2_text(state, num_heads=4)
  assert cfg_dir == cfg_sd == siglip2_text.TextConfig(
      vocab_size=VOCAB, width=32, depth=2, num_heads=4, mlp_dim=48, max_len=MAX_LEN,
      projection_size=24)
  jax.tree.map(np.testing.assert_array_equal, params_dir, params_sd)
  assert extras_sd == {}
  np.testing.assert_allclose(extras["logit_scale"], model.logit_scale.item(), rtol=1e-6)
  np.testing.assert_allclose(extras["logit_bias"], model.logit_bias.item(), rtol=1e-6)
  # the imported tree has exactly the shapes of a freshly initialised one
  assert jax.tree.map(np.shape, _abstract_params(cfg_dir)) == jax.tree.map(np.shape, params_dir)


def test_siglip_v1_text_model_imports(tmp_path):
  transformers = pytest.importorskip("transformers")
  cfg = transformers.SiglipTextConfig(
      vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
      num_attention_heads=2, max_position_embeddings=MAX_LEN, projection_size=32,
      bos_token_id=None, eos_token_id=1, pad_token_id=1)
  torch.manual_seed(1)
  model = transformers.SiglipTextModel(cfg).eval()
  _randomise(model)
  model.save_pretrained(tmp_path)
  ours_cfg, params, _ = text_interop.load_siglip2_text(tmp_path)
  assert ours_cfg.num_heads == 2
  ids = _ids([4, MAX_LEN], MAX_LEN, seed=2)
  with torch.no_grad():
    ref = model(input_ids=torch.from_numpy(ids)).pooler_output.numpy()
  np.testing.assert_allclose(_ours(ours_cfg, params, ids)[1], ref, rtol=1e-5, atol=1e-5)


def test_scanned_import_equals_unscanned(hf_text):
  _, path = hf_text
  ids = _ids([5, MAX_LEN], MAX_LEN, seed=3)
  a = _ours(*text_interop.load_siglip2_text(path)[:2], ids)
  b = _ours(*text_interop.load_siglip2_text(path, scan_layers=True)[:2], ids)
  np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-5)


def test_presets_and_bad_inputs():
  so = siglip2_text.text_config("so400m")
  assert (so.width, so.depth, so.num_heads, so.mlp_dim, so.vocab_size, so.projection_size,
          so.max_len) == (1152, 27, 16, 4304, 256_000, 1152, 64)
  n_params = sum(a.size for a in jax.tree.leaves(_abstract_params(so, 64)))
  assert 700e6 < n_params < 715e6  # So400m text tower: ~708M (295M of them the token table)
  tiny = siglip2_text.text_config("tiny")
  out = jax.eval_shape(siglip2_text.TextEncoder(tiny).apply, {"params": _abstract_params(tiny, 64)},
                       jax.ShapeDtypeStruct((3, 64), jnp.int32))
  assert out["pooled"].shape == (3, 64) and out["hidden"].shape == (3, 64, 64)
  with pytest.raises(ValueError, match="max_len"):
    jax.eval_shape(siglip2_text.TextEncoder(tiny).init, jax.random.key(0),
                   jax.ShapeDtypeStruct((1, 65), jnp.int32))
  with pytest.raises(ValueError, match="unknown text preset"):
    siglip2_text.text_config("huge")
  with pytest.raises(ValueError, match="token_embedding"):
    text_interop.load_siglip2_text({"embeddings.patch_embedding.weight": np.zeros((4, 768))})
