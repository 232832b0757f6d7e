"""3D Gaussian decoder (spec §2.9, §3.3): parity with an independent PyTorch reference on random
tiny weights, the released state-dict layout, export/import, activations, padding, input checks."""
import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from atoken_jax import config as config_lib
from atoken_jax.gaussian_decoder import GaussianDecoder
from atoken_jax.interop import checkpoint_io, ml_atoken_gs
from atoken_jax.interop import torch_gaussian_decoder as tgd
from atoken_jax.model import gaussian_decoder as net_lib
from atoken_jax.model import gaussians

DATA = os.path.join(os.path.dirname(__file__), "testdata")
TINY = config_lib.gaussian_decoder_config("tiny")


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


def _voxels(n, seed=0, extent=24):
  """n distinct voxels clustered in [0, extent)^3 so windows hold many voxels."""
  rng = np.random.default_rng(seed)
  flat = rng.choice(extent ** 3, n, replace=False)
  coords = np.stack(np.unravel_index(flat, (extent,) * 3), -1).astype(np.int32)
  coords[: n // 4] += 64 - extent  # a second cluster at the far corner (odd windows clip there)
  return rng.uniform(-1, 1, (n, 768)).astype(np.float32), coords


@pytest.fixture(scope="module")
def torch_ref():
  """A torch reference with random weights everywhere, scaled so the softcap bites."""
  torch.manual_seed(0)
  m = tgd.GaussianDecoder.from_config(TINY)
  with torch.no_grad():
    for name, p in m.named_parameters():
      if "norm" in name:
        p.copy_(1 + 0.3 * torch.randn_like(p))
      elif "to_qkv" in name:
        p.mul_(6.0)
      elif "out_layer" in name:
        p.copy_(0.1 * torch.randn_like(p))
  return m.eval()


@pytest.fixture(scope="module")
def gdec(torch_ref):
  sd = {k: v.numpy() for k, v in torch_ref.state_dict().items()}
  params, constants = ml_atoken_gs.from_state_dict(sd, TINY)
  return GaussianDecoder(TINY, params, constants)


def _torch_out(m, feats, coords):
  with torch.no_grad():
    f, c = torch.from_numpy(feats), torch.from_numpy(coords).long()
    return m.raw(f, c).numpy(), {k: v.numpy() for k, v in m(f, c).items()}


@pytest.mark.parametrize("attention", ["masked", "packed"])
def test_parity_with_torch_reference(torch_ref, gdec, attention):
  feats, coords = _voxels(300)
  want_raw, want = _torch_out(torch_ref, feats, coords)
  dec = GaussianDecoder(gdec.cfg, gdec.params, gdec.constants, attention=attention)
  assert _rel(dec.raw(feats, coords), want_raw) < 1e-5
  g = dec(feats, coords)
  for k in ("xyz", "scale", "rotation", "opacity", "sh_dc"):
    assert getattr(g, k).shape == want[k].shape, k
    assert _rel(getattr(g, k), want[k]) < 1e-5, k
  assert g.xyz.shape == (300 * 32, 3)


def test_windows_and_softcap_matter(torch_ref, gdec):
  """The parity test is sensitive: no softcap, or no window shift, changes the output."""
  feats, coords = _voxels(200, seed=1)
  want_raw, _ = _torch_out(torch_ref, feats, coords)
  no_cap = GaussianDecoder(dataclasses.replace(TINY, softcap=None), gdec.params, gdec.constants)
  assert _rel(no_cap.raw(feats, coords), want_raw) > 1e-3
  shifted = coords.copy()
  shifted[:, 0] = np.minimum(shifted[:, 0] + 4, 63)  # moves voxels across window borders
  assert _rel(gdec.raw(feats, coords), gdec.raw(feats, shifted)) > 1e-3


def test_window_ids_shift_and_padding():
  c = jnp.asarray([[[3, 0, 0], [4, 0, 0], [11, 0, 0], [12, 0, 0], [63, 63, 63], [0, 0, 0]]])
  valid = jnp.asarray([[True] * 5 + [False]])
  even = net_lib.window_ids(c, valid, TINY, 0)[0]
  odd = net_lib.window_ids(c, valid, TINY, 4)[0]
  assert even[0] == even[1] != even[2] == even[3]  # x // 8: 0 0 1 1
  assert odd[0] != odd[1] == odd[2] != odd[3]  # (x + 4) // 8: 0 1 1 2
  assert even[5] == odd[5] == 0 and (even[:5] > 0).all() and (odd[:5] > 0).all()
  assert odd[4] == (8 * 9 + 8) * 9 + 8 + 1  # (63 + 4) // 8 = 8: no wrap, 9 windows per axis


def test_offset_perturbation_against_hammersley():
  g = np.arange(32)
  base2 = np.array([int(f"{i:05b}"[::-1], 2) / 32 for i in g])  # bit reversal
  base3 = np.array([sum(int(d) * 3.0 ** -(j + 1) for j, d in enumerate(np.base_repr(i, 3)[::-1]))
                    for i in g])
  pts = np.stack([g / 32, base2, base3], -1)
  want = np.arctanh((pts * 2 - 1) / 1.5)
  got = gaussians.offset_perturbation(32, 1.5)
  assert got.dtype == np.float32 and got.shape == (32, 3)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got[0], np.arctanh(-1 / 1.5), rtol=1e-6)
  assert base3[5] == pytest.approx(2 / 3 + 1 / 9)  # 5 = 12_3 -> 0.21_3
  np.testing.assert_array_equal(
      got, tgd.GaussianDecoder.from_config(TINY).offset_perturbation.numpy())
  net = net_lib.GaussianDecoderNet(TINY)
  v = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 768)),
                     jnp.zeros((1, 4, 3), jnp.int32), jnp.ones((1, 4), bool))
  assert v["constants"]["offset_perturbation"].shape == (32, 3)


def test_activation_of_zero_output():
  coords = jnp.asarray([[0, 0, 0], [10, 20, 63]])
  g = gaussians.activate(jnp.zeros((2, 448)), coords, TINY)
  np.testing.assert_allclose(g.opacity, 0.1, rtol=1e-6)
  np.testing.assert_allclose(g.scale, np.sqrt(0.004 ** 2 + 0.0009 ** 2), rtol=1e-5)
  np.testing.assert_allclose(g.rotation, np.tile([1.0, 0, 0, 0], (64, 1)), atol=1e-7)
  np.testing.assert_array_equal(g.sh_dc, 0)
  # tanh(atanh((2h - 1) / 1.5)) * 0.75 / 64 = (h - 0.5) / 64: Gaussian g sits at voxel + h_g.
  h = (np.tanh(gaussians.offset_perturbation()) * 1.5 + 1) / 2
  want = (np.asarray(coords)[:, None] + h[None]) / 64 - 0.5
  np.testing.assert_allclose(g.xyz, want.reshape(-1, 3), atol=1e-6)
  assert g.xyz.shape == (64, 3) and g.opacity.shape == (64,)


def test_activation_layout_and_lr():
  """Group order, Gaussian-major columns, rotation lr 0.1 and voxel-major rows."""
  raw = np.zeros((2, 448), np.float32)
  raw[1, 192 + 3 * 5 + 2] = 1.0  # _scaling of Gaussian 5, axis z, voxel 1
  raw[1, 288 + 4 * 7 + 1] = 10.0  # _rotation of Gaussian 7, component x -> 1.0 after lr 0.1
  raw[0, 416 + 31] = 2.0  # _opacity of Gaussian 31, voxel 0
  raw[0, 96 + 3 * 2 + 1] = -0.25  # _features_dc of Gaussian 2, green
  g = gaussians.activate(jnp.asarray(raw), jnp.zeros((2, 3), jnp.int32), TINY)
  sp = np.log1p(np.exp(1.0 + np.log(np.expm1(0.004))))
  assert float(g.scale[32 + 5, 2]) == pytest.approx(np.sqrt(sp ** 2 + 0.0009 ** 2), rel=1e-5)
  np.testing.assert_allclose(g.rotation[32 + 7], [2 ** -0.5, 2 ** -0.5, 0, 0], rtol=1e-6)
  assert float(g.opacity[31]) == pytest.approx(1 / (1 + np.exp(-(2 + np.log(0.1 / 0.9)))))
  assert float(g.sh_dc[2, 1]) == -0.25 and float(np.abs(g.sh_dc).sum()) == 0.25


def test_ape_matches_reference_and_pads():
  coords = np.array([[0, 1, 2], [63, 7, 30]], np.int32)
  for width in (96, 64):  # 64: fd = 10, so 60 dims + 4 zeros
    got = np.asarray(net_lib.ape(jnp.asarray(coords), width))
    want = tgd.GaussianDecoder(width=width, depth=0, heads=4).ape(torch.from_numpy(coords))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(got[:, 60:], 0)


def test_padding_and_segments_do_not_change_real_outputs(gdec):
  feats, coords = _voxels(100, seed=2)
  net = net_lib.GaussianDecoderNet(TINY)
  apply = jax.jit(lambda f, c, m, s=None, lay=None: net.apply(gdec.variables, f, c, m, s,
                                                                layout=lay))
  rng = np.random.default_rng(3)
  pad_f = rng.uniform(-1, 1, (60, 768)).astype(np.float32)
  pad_c = coords[rng.integers(0, 100, 60)]  # padding sitting in the real voxels' windows
  f = np.stack([np.concatenate([feats, pad_f]), np.concatenate([pad_f, feats])])
  c = np.stack([np.concatenate([coords, pad_c]), np.concatenate([pad_c, coords])])
  m = np.zeros((2, 160), bool)
  m[0, :100] = m[1, 60:] = True
  ref = np.asarray(apply(feats[None], coords[None], np.ones((1, 100), bool)))
  for layout in (None, net_lib.window_layout(c, m, TINY)):
    out = np.asarray(apply(f, c, m, None, layout))
    assert _rel(out[0, :100], ref[0]) < 1e-6 and _rel(out[1, 60:], ref[0]) < 1e-6
  # two samples packed in one row with segment ids == two rows
  seg = np.concatenate([np.ones(100, np.int32), np.full(100, 2, np.int32)])[None]
  f2, c2 = np.concatenate([feats, feats])[None], np.concatenate([coords, coords])[None]
  for layout in (None, net_lib.window_layout(c2, seg > 0, TINY, segment_ids=seg)):
    out = np.asarray(apply(f2, c2, seg > 0, seg, layout))
    assert _rel(out[0, :100], ref[0]) < 1e-6 and _rel(out[0, 100:], ref[0]) < 1e-6


def test_window_layout_packs_whole_windows():
  _, coords = _voxels(500, seed=4, extent=40)
  valid = np.ones((1, 500), bool)
  lay = net_lib.window_layout(coords[None], valid, TINY)
  for i, parity in enumerate(net_lib.PARITIES):
    lp = lay[parity]
    ids = np.asarray(net_lib.window_ids(coords, valid[0], TINY, 4 * i))
    slots = lp["index"].reshape(-1)
    np.testing.assert_array_equal(slots[lp["inverse"]], np.arange(500))  # every token once
    assert (slots < 500).sum() == 500
    for w in np.unique(ids):  # a window lies in exactly one bin
      rows = np.unique(lp["inverse"][ids == w] // lp["index"].shape[1])
      assert rows.size == 1


def test_released_state_dict_layout():
  """76 tensors, 85,887,520 values (spec §3.3), via eval_shape: nothing big is allocated."""
  cfg = config_lib.gaussian_decoder_config("so400m")
  assert cfg == ml_atoken_gs.config_from_yaml(os.path.join(DATA, "3d_decode_gs.yaml"))
  net = net_lib.GaussianDecoderNet(cfg)
  v = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 768)),
                     jnp.zeros((1, 4, 3), jnp.int32), jnp.ones((1, 4), bool))
  v = nn.meta.unbox(v)
  sd = jax.eval_shape(lambda p, c: ml_atoken_gs.to_state_dict(p, c, cfg), v["params"],
                      v["constants"])
  shapes = {k: tuple(x.shape) for k, x in sd.items()}
  assert len(shapes) == 76
  assert sum(int(np.prod(s)) for s in shapes.values()) == 85_887_520
  assert shapes == ml_atoken_gs.expected_shapes(cfg)
  top = {"offset_perturbation": (32, 3), "input_layer.weight": (768, 768),
         "out_layer.weight": (448, 768), "out_layer.bias": (448,)}
  block = {"norm1.weight": (768,), "norm2.weight": (768,), "attn.to_qkv.weight": (2304, 768),
           "attn.to_out.weight": (768, 768), "mlp.mlp.0.weight": (3072, 768),
           "mlp.mlp.2.weight": (768, 3072)}
  spec = dict(top, **{f"blocks.{i}.{k}": s for i in range(12) for k, s in block.items()})
  assert shapes == spec
  with torch.device("meta"):  # the independent reference agrees, also without allocating
    ref = tgd.GaussianDecoder.from_config(cfg)
  assert {k: tuple(t.shape) for k, t in ref.state_dict().items()} == spec


@pytest.mark.parametrize("ext", ["safetensors", "pt"])
def test_export_import_identity(tmp_path, torch_ref, gdec, ext):
  path, ypath = tmp_path / f"gs.{ext}", tmp_path / "gs.yaml"
  gdec.export_ml_atoken(path, yaml_path=ypath)
  if ext == "pt":  # the released training subclass also stores LPIPS weights: ignored
    sd = checkpoint_io.load_state_dict(path)
    sd["lpips_loss.net.lin0.weight"] = np.ones((1, 64, 1, 1), np.float32)
    checkpoint_io.save_state_dict(sd, path)
  back = GaussianDecoder.from_ml_atoken(path, ypath)
  assert back.cfg == gdec.cfg
  jax.tree.map(np.testing.assert_array_equal, back.variables, gdec.variables)
  ref = tgd.GaussianDecoder.from_config(gdec.cfg)
  ref.load_state_dict({k: torch.tensor(v) for k, v in back.state_dict().items()},
                      strict=True)
  for k, t in torch_ref.state_dict().items():
    np.testing.assert_array_equal(ref.state_dict()[k].numpy(), t.numpy())


def test_init_random_and_key_errors(tmp_path):
  g = GaussianDecoder.init_random("tiny", seed=0)
  assert g.cfg == TINY
  assert len(g.state_dict()) == 4 + 6 * TINY.depth
  np.testing.assert_array_equal(g.params["out_layer"]["kernel"], 0)  # zero-initialised head
  sd = g.state_dict()
  del sd["blocks.1.norm2.weight"]
  sd["blocks.0.attn.to_qkv.weight"] = sd["blocks.0.attn.to_qkv.weight"][:10]
  checkpoint_io.save_state_dict(sd, tmp_path / "bad.safetensors")
  with pytest.raises(ValueError, match="blocks.1.norm2.weight") as e:
    GaussianDecoder.from_ml_atoken(tmp_path / "bad.safetensors",
                                   os.path.join(DATA, "3d_decode_gs_tiny.yaml"))
  assert "blocks.0.attn.to_qkv.weight" in str(e.value)


def test_yaml_round_trip_and_unsupported(tmp_path):
  cfg = ml_atoken_gs.config_from_yaml(os.path.join(DATA, "3d_decode_gs_tiny.yaml"))
  assert cfg == TINY
  ml_atoken_gs.save_yaml(cfg, tmp_path / "x.yaml")
  assert ml_atoken_gs.config_from_yaml(tmp_path / "x.yaml") == cfg
  y = ml_atoken_gs.yaml_from_config(cfg)
  y["model"]["attn_mode"] = "full"
  with pytest.raises(ValueError, match="attn_mode"):
    ml_atoken_gs.config_from_yaml(y)


def test_bad_inputs_raise(gdec):
  feats, coords = _voxels(10)
  bad = [
      (feats[:, :700], coords, "shape"), (feats, coords[:, :2], "shape"),
      (feats[None], coords, "shape"), (feats[:9], coords, "rows"),
      (feats[:0], coords[:0], "empty"), (np.where(feats > 0.9, np.nan, feats), coords, "NaN"),
      (feats, coords + 60, r"\[0, 64\)"), (feats, coords - 5, r"\[0, 64\)"),
      (feats, coords + 0.5, "integers"), (feats.astype(bool), coords, "dtype"),
  ]
  for f, c, msg in bad:
    with pytest.raises(ValueError, match=msg):
      gdec(f, c)
    with pytest.raises(ValueError, match=msg):
      gdec.raw(f, c)
  gdec(feats, coords.astype(np.float32))  # integral floats are fine
