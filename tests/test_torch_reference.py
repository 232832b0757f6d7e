"""Export proof: our exported checkpoint loads strictly into the independent PyTorch module
(atoken_jax.interop.torch_atoken, written from the ml-atoken spec) and computes what our JAX
model computes, within 1e-5 relative in float32; `.pt` files are read weights-only."""
import os
import pickle

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from atoken_jax import config as config_lib  # noqa: E402
from atoken_jax import packing, tokens  # noqa: E402
from atoken_jax.interop import checkpoint_io, ml_atoken, torch_atoken  # noqa: E402
from atoken_jax.model.atoken import AToken  # noqa: E402

TINY = config_lib.model_config("tiny", quantizer="fsq")
REL_TOL = 1e-5
random_state = ml_atoken.random_state_dict


def assert_close(ours, reference, what: str, tol: float = REL_TOL):
  """max |ours - reference| <= tol * max |reference|."""
  ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
  assert ours.shape == reference.shape, (what, ours.shape, reference.shape)
  err = np.abs(ours - reference).max() / np.abs(reference).max()
  assert err <= tol, f"{what}: relative error {err:.3g} > {tol}"


def sparse_video(rng) -> tokens.TokenSeq:
  """36 scattered tokens over 8 latent frames whose two tiles have different extents (rows
  0..19 x cols 0..4, then rows 0..3 x cols 0..30), in shuffled order."""
  first = rng.choice(20 * 5, 18, replace=False)
  second = rng.choice(4 * 31, 18, replace=False)
  coords = np.concatenate([
      np.stack([rng.integers(0, 4, 18), first // 5, first % 5, np.zeros(18, int)], 1),
      np.stack([rng.integers(4, 8, 18), second // 31, second % 31, np.zeros(18, int)], 1)])
  order = rng.permutation(36)
  patches = rng.uniform(-1, 1, (36, 3072)).astype(np.float32)
  return tokens.TokenSeq(patches=patches, coords=coords[order].astype(np.int32), kind="video",
                         frames=32)


def samples():
  """An image and a 2-latent-frame video of other sizes, a 9-latent-frame video (3 tiles), a
  3D voxel set and a scattered 2-tile video; rows/cols below and above 16 exercise
  antialiased down- and upsampling of the position table."""
  rng = np.random.default_rng(0)
  image = rng.uniform(-1, 1, (40, 330, 3)).astype(np.float32)  # crop -> 2 x 20 tokens
  video = rng.uniform(-1, 1, (9, 48, 80, 3)).astype(np.float32)  # 8 frames -> 2 x 3 x 5
  long_video = rng.uniform(-1, 1, (36, 32, 48, 3)).astype(np.float32)  # 9 x 2 x 3
  flat = rng.choice(64 ** 3, 50, replace=False)
  voxels = tokens.Voxels(np.stack([flat // 4096, flat // 64 % 64, flat % 64], 1).astype(np.int32),
                         rng.uniform(0, 1, (50, 768)).astype(np.float32))
  return [tokens.to_tokens(x) for x in (image, video, long_video, voxels)] + [sparse_video(rng)]


def ml_atoken_inputs(seqs, batch_ids=None):
  """feats [N, 3072] and coords [N, 5] = (batch, t, x, y, z), rows sorted by batch."""
  batch_ids = range(len(seqs)) if batch_ids is None else batch_ids
  feats = np.concatenate([s.patches for s in seqs])
  coords = np.concatenate([np.concatenate([np.full((len(s), 1), b), s.coords], 1)
                           for b, s in zip(batch_ids, seqs)])
  return torch.from_numpy(feats), torch.from_numpy(coords.astype(np.int64))


@pytest.fixture(scope="module")
def jax_run():
  """Our JAX model on the packed samples (2 rows x 128 tokens, up to 3 samples per row)."""
  seqs = samples()
  assert [len(s) for s in seqs] == [40, 30, 54, 50, 36]
  batch = packing.pack(seqs, row_len=128, max_samples_per_row=3)
  assert batch.segment_ids.shape == (2, 128)
  inputs = batch.for_model()
  params = ml_atoken.state_dict_to_params(random_state(TINY, seed=7), TINY)
  model = AToken(TINY)
  encode = jax.jit(lambda p, b: model.apply({"params": p}, b, method=AToken.encode))
  decode = jax.jit(lambda p, z, b: model.apply({"params": p}, z, b, method=AToken.decode))
  enc = encode(params, inputs)
  fsq = model.apply({"params": params}, enc, method=AToken.latent)
  per_token = lambda x: np.concatenate(packing.unpack(np.asarray(x), batch))
  return dict(
      seqs=seqs, params=params,
      features=per_token(enc["features"]), mean=per_token(enc["mean"]),
      logvar=per_token(enc["logvar"]),
      pooled=np.stack(packing.unpack_samples(np.asarray(enc["pooled"]), batch)),
      codes=per_token(fsq["codes"]), indices=per_token(fsq["indices"]),
      rec_codes=per_token(decode(params, fsq["latent"], inputs)),
      rec_mean=per_token(decode(params, enc["mean"], inputs)))


@pytest.fixture(scope="module")
def exported(jax_run, tmp_path_factory):
  """Our export, written as .safetensors and .pt, each loaded strictly into the torch module."""
  state = ml_atoken.params_to_state_dict(jax_run["params"], TINY)
  models = {}
  for ext in ("safetensors", "pt"):
    path = str(tmp_path_factory.mktemp("export") / f"tiny.{ext}")
    checkpoint_io.save_state_dict(state, path)
    models[ext] = torch_atoken.TorchAToken.from_state_dict(path, TINY)
  return models


def test_module_names_are_ml_atokens():
  for cfg in (TINY, config_lib.model_config("so400m")):
    with torch.device("meta"):  # So400m: shapes only, nothing allocated
      model = torch_atoken.TorchAToken(cfg)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == ml_atoken.expected_shapes(cfg)


def test_safetensors_and_pt_exports_load_the_same(exported):
  a, b = (m.state_dict() for m in exported.values())
  assert a.keys() == b.keys()
  for k in a:
    assert torch.equal(a[k], b[k]), k


def test_encoder_outputs_match_jax(jax_run, exported):
  model = exported["safetensors"]
  features, pooled, mean, logvar = model.encode(*ml_atoken_inputs(jax_run["seqs"]))
  assert_close(jax_run["features"], features, "features")
  assert_close(jax_run["pooled"], pooled, "pooled")
  assert_close(jax_run["mean"], mean, "mean")
  assert_close(jax_run["logvar"], logvar, "logvar")


def test_fsq_matches_jax(jax_run, exported):
  model = exported["pt"]
  _, _, mean, _ = model.encode(*ml_atoken_inputs(jax_run["seqs"]))
  codes, indices = model.quantize(mean)
  np.testing.assert_array_equal(indices.numpy(), jax_run["indices"])
  np.testing.assert_array_equal(codes.numpy(), jax_run["codes"])
  # The same input exactly: identical codes and indices, whatever the rounding neighbourhood.
  codes, indices = model.quantize(torch.from_numpy(jax_run["mean"]))
  assert indices.dtype == torch.int32
  np.testing.assert_array_equal(indices.numpy(), jax_run["indices"])
  np.testing.assert_array_equal(codes.numpy(), jax_run["codes"])
  assert len(np.unique(jax_run["indices"])) > 100  # the codes are spread, not saturated


def test_decoder_matches_jax(jax_run, exported):
  model = exported["safetensors"]
  _, coords = ml_atoken_inputs(jax_run["seqs"])
  rec = model.decode(torch.from_numpy(jax_run["codes"]), coords)
  assert_close(jax_run["rec_codes"], rec, "reconstruction from FSQ codes")
  rec = model.decode(torch.from_numpy(jax_run["mean"]), coords)
  assert_close(jax_run["rec_mean"], rec, "reconstruction from the mean")


def test_each_sample_alone_gives_its_batch_rows(jax_run, exported):
  """Batch composition does not matter: a lone sample (its own batch-wide tiles; the voxel
  sample alone runs at t = 0 instead of 1) reproduces its rows of the mixed batch."""
  model = exported["safetensors"]
  starts = np.cumsum([0] + [len(s) for s in jax_run["seqs"]])
  for i, seq in enumerate(jax_run["seqs"]):
    feats, coords = ml_atoken_inputs([seq], batch_ids=[0])
    features, pooled, mean, _ = model.encode(feats, coords)
    rows = slice(starts[i], starts[i + 1])
    assert_close(jax_run["features"][rows], features, f"features of sample {i}")
    assert_close(jax_run["pooled"][i:i + 1], pooled, f"pooled of sample {i}")
    rec = model.decode(torch.from_numpy(jax_run["mean"][rows]), coords)
    assert_close(jax_run["rec_mean"][rows], rec, f"reconstruction of sample {i}")


def test_tiles_are_batch_wide_and_tile_local():
  coords = torch.tensor([[0, 0, 0, 0, 0], [0, 5, 0, 0, 0], [0, 9, 0, 0, 0], [1, 4, 1, 1, 0],
                         [1, 8, 0, 0, 0]])
  tiles = torch_atoken.temporal_tiles(coords)
  assert [r.tolist() for r, _ in tiles] == [[0], [1, 3], [2, 4]]
  assert [c[:, 1].tolist() for _, c in tiles] == [[0], [1, 0], [1, 0]]
  lone = torch_atoken.temporal_tiles(torch.tensor([[0, 1, 3, 4, 5], [0, 1, 0, 0, 0]]))
  assert lone[0][1][:, 1].tolist() == [0, 0]  # shifted by the batch-wide t_min


def test_without_rope_matches_jax():
  """use_rope=False (ml-atoken pe_mode 'learned'): only the learned table gives positions."""
  cfg = config_lib.model_config("tiny", use_rope=False)
  seq = tokens.to_tokens(np.random.default_rng(1).uniform(-1, 1, (48, 80, 3)).astype(np.float32))
  batch = packing.pack([seq], row_len=16, max_samples_per_row=1)
  params = ml_atoken.state_dict_to_params(random_state(cfg, seed=2), cfg)
  enc = AToken(cfg).apply({"params": params}, batch.for_model(), method=AToken.encode)
  model = torch_atoken.TorchAToken.from_state_dict(ml_atoken.params_to_state_dict(params, cfg), cfg)
  features, pooled, mean, _ = model.encode(*ml_atoken_inputs([seq]))
  assert_close(packing.unpack(np.asarray(enc["features"]), batch)[0], features, "features")
  assert_close(np.asarray(enc["pooled"])[0], pooled, "pooled without RoPE")
  assert_close(packing.unpack(np.asarray(enc["mean"]), batch)[0], mean, "mean without RoPE")


class _Payload:
  """Unpickling this would create `marker`."""

  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


def test_pt_files_are_read_weights_only(tmp_path):
  marker = str(tmp_path / "pickle_code_ran")
  path = str(tmp_path / "evil.pt")
  with open(path, "wb") as f:
    torch.save({"proj.weight": torch.zeros(96, 64), "payload": _Payload(marker)}, f)
  loaders = [checkpoint_io.load_state_dict,
             lambda p: torch_atoken.TorchAToken.from_state_dict(p, TINY),
             lambda p: ml_atoken.load_ml_atoken(p, os.path.join(
                 os.path.dirname(__file__), "testdata", "atoken-tiny.yaml"))]
  for load in loaders:  # refused (the CLI's loaders say so in one line), the payload never runs
    with pytest.raises((pickle.UnpicklingError, ValueError)):
      load(path)
    assert not os.path.exists(marker)


def test_strict_loading_names_a_wrong_key():
  state = {k: torch.from_numpy(v) for k, v in random_state(TINY).items()}
  state["encoder.blocks.0.attn.qkv.weight"] = state.pop("encoder.blocks.0.attn.to_qkv.weight")
  with pytest.raises(RuntimeError, match=r"encoder\.blocks\.0\.attn\.to_qkv\.weight"):
    torch_atoken.TorchAToken.from_state_dict(state, TINY)
