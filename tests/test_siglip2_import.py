"""SigLIP2 import: a 1-frame image through our encoder equals Hugging Face's Siglip2VisionModel."""
import numpy as np
import pytest

import atoken_jax as aj
from atoken_jax import config as config_lib

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def hf_siglip2(tmp_path_factory):
  transformers = pytest.importorskip("transformers")
  cfg = transformers.Siglip2VisionConfig(
      hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
      num_channels=3, patch_size=16, num_patches=256, layer_norm_eps=1e-6)
  torch.manual_seed(0)
  model = transformers.Siglip2VisionModel(cfg).eval()
  with torch.no_grad():  # HF zero-initialises some biases; make every weight matter
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  path = tmp_path_factory.mktemp("siglip2")
  model.save_pretrained(path)
  return model, path


def _hf_forward(model, image):
  """image [H, W, 3] (multiples of 16) -> (last_hidden_state [n, C], pooler_output [C])."""
  h, w = image.shape[0] // 16, image.shape[1] // 16
  patches = image.reshape(h, 16, w, 16, 3).transpose(0, 2, 1, 3, 4).reshape(1, h * w, 768)
  with torch.no_grad():
    out = model(pixel_values=torch.from_numpy(patches),
                pixel_attention_mask=torch.ones(1, h * w, dtype=torch.long),
                spatial_shapes=torch.tensor([[h, w]]))
  return out.last_hidden_state[0].numpy(), out.pooler_output[0].numpy()


@pytest.mark.parametrize("hw", [(64, 48), (32, 320), (256, 256)])
def test_image_encoding_equals_hf_siglip2(hf_siglip2, hw):
  model, path = hf_siglip2
  tok = aj.Tokenizer.from_siglip2(path, decoder="tiny", use_rope=False)
  image = np.random.default_rng(hw[0]).uniform(-1, 1, (*hw, 3)).astype(np.float32)
  enc = tok.encode([image])
  hidden, pooled = _hf_forward(model, image)
  np.testing.assert_allclose(enc[0].features, hidden, rtol=1e-5, atol=2e-5)
  np.testing.assert_allclose(enc.pooled[0], pooled, rtol=1e-5, atol=2e-5)


def test_imported_encoder_layout(hf_siglip2):
  model, path = hf_siglip2
  tok = aj.Tokenizer.from_siglip2(path, decoder="tiny", latent_dim=32)
  assert tok.cfg.encoder == config_lib.TrunkConfig(64, 2, 4, 128)
  assert tok.cfg.latent_dim == 32 and tok.cfg.use_rope
  kernel = np.asarray(tok.params["encoder"]["input_layer"]["kernel"])
  sd = model.state_dict()
  np.testing.assert_array_equal(kernel[:768], sd["embeddings.patch_embedding.weight"].numpy().T)
  assert not kernel[768:].any(), "temporal columns must start at zero"
  # so frames 1..3 of a patch do not change an image's encoding at initialisation
  rng = np.random.default_rng(0)
  frame = rng.uniform(-1, 1, (32, 32, 3)).astype(np.float32)
  video = np.concatenate([frame[None], rng.uniform(-1, 1, (3, 32, 32, 3))]).astype(np.float32)
  enc = tok.encode([frame, video])
  np.testing.assert_allclose(enc[0].features, enc[1].features, rtol=1e-6, atol=1e-6)


def test_scanned_import_matches_unscanned(hf_siglip2):
  _, path = hf_siglip2
  image = np.random.default_rng(3).uniform(-1, 1, (48, 64, 3)).astype(np.float32)
  a = aj.Tokenizer.from_siglip2(path).encode([image])
  b = aj.Tokenizer.from_siglip2(path, scan_layers=True).encode([image])
  np.testing.assert_allclose(a[0].features, b[0].features, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(a.pooled, b.pooled, rtol=1e-5, atol=1e-5)


def test_not_a_siglip2_checkpoint_is_refused(tmp_path):
  from atoken_jax.interop import checkpoint_io
  p = tmp_path / "x.safetensors"
  checkpoint_io.save_state_dict({"foo": np.zeros(3, np.float32)}, p)
  with pytest.raises(ValueError, match="patch_embedding"):
    aj.Tokenizer.from_siglip2(str(p))
