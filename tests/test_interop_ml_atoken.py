"""ml-atoken names and configs: key sets against the spec's listing, import/export identity,
errors that name the key, YAML configs (atoken_jax.interop.ml_atoken)."""
import math
import os

import flax
import flax.linen as nn
import jax
import ml_dtypes
import numpy as np
import pytest
import yaml

from atoken_jax import config as config_lib
from atoken_jax.batch import Batch
from atoken_jax.interop import checkpoint_io, ml_atoken
from atoken_jax.model.atoken import AToken

TESTDATA = os.path.join(os.path.dirname(__file__), "testdata")
SOC_YAML = os.path.join(TESTDATA, "atoken-soc.yaml")
TINY_YAML = os.path.join(TESTDATA, "atoken-tiny.yaml")
TINY = config_lib.model_config("tiny", quantizer="fsq")


def spec_listing(latent: int = 48) -> dict[str, tuple]:
  """The So/C tensors exactly as spec §3.2 lists them."""
  c, m, qkv = 1152, 4304, 3456
  s = {
      "encoder.pos_embedder.position_embedding.weight": (256, c),
      "encoder.input_layer.weight": (c, 3072), "encoder.input_layer.bias": (c,),
      "encoder.post_layernorm.weight": (c,), "encoder.post_layernorm.bias": (c,),
      "encoder.head.probe": (c,),
      "encoder.head.attention.to_q.weight": (c, c), "encoder.head.attention.to_q.bias": (c,),
      "encoder.head.attention.to_kv.weight": (2 * c, c),
      "encoder.head.attention.to_kv.bias": (2 * c,),
      "encoder.head.attention.to_out.weight": (c, c), "encoder.head.attention.to_out.bias": (c,),
      "encoder.head.layernorm.weight": (c,), "encoder.head.layernorm.bias": (c,),
      "encoder.head.mlp.mlp.0.weight": (m, c), "encoder.head.mlp.mlp.0.bias": (m,),
      "encoder.head.mlp.mlp.2.weight": (c, m), "encoder.head.mlp.mlp.2.bias": (c,),
      "proj.weight": (2 * latent, c),
      "decoder.pos_embedder.position_embedding.weight": (256, c),
      "decoder.input_layer.weight": (c, latent),
      "decoder.out_norm.weight": (c,),
      "decoder.out_layer.weight": (3072, c),
  }
  for i in range(27):
    e, d = f"encoder.blocks.{i}.", f"decoder.blocks.{i}."
    s.update({e + "norm1.weight": (c,), e + "norm1.bias": (c,), e + "norm2.weight": (c,),
              e + "norm2.bias": (c,), e + "attn.to_qkv.weight": (qkv, c),
              e + "attn.to_qkv.bias": (qkv,), e + "attn.to_out.weight": (c, c),
              e + "attn.to_out.bias": (c,), e + "mlp.mlp.0.weight": (m, c),
              e + "mlp.mlp.0.bias": (m,), e + "mlp.mlp.2.weight": (c, m),
              e + "mlp.mlp.2.bias": (c,)})
    s.update({d + "norm1.weight": (c,), d + "norm2.weight": (c,),
              d + "attn.to_qkv.weight": (qkv, c), d + "attn.q_rms_norm.gamma": (16, 72),
              d + "attn.k_rms_norm.gamma": (16, 72), d + "attn.to_out.weight": (c, c),
              d + "mlp.mlp.0.weight": (m, c), d + "mlp.mlp.2.weight": (c, m)})
  return s


def random_state(cfg, seed: int = 0) -> dict[str, np.ndarray]:
  return ml_atoken.random_state_dict(cfg, seed)


def dummy_batch(length: int = 8) -> Batch:
  z = lambda *s, dt=np.float32: np.zeros((1, length) + s, dt)
  return Batch(patches=z(3072), coords=z(4, dt=np.int32), segment_ids=z(dt=np.int32) + 1,
               sample_ids=z(dt=np.int32) + 1, tile_index=z(dt=np.int32), pos_row_weights=z(16),
               pos_col_weights=z(16), sample_index=np.zeros((1, 1), np.int32))


def model_param_shapes(cfg) -> dict[tuple, tuple]:
  """Our parameter paths and shapes, from `jax.eval_shape(model.init)` (nothing allocated)."""
  tree = jax.eval_shape(lambda: AToken(cfg).init(jax.random.key(0), dummy_batch(),
                                                 posterior="mean"))["params"]
  flat = flax.traverse_util.flatten_dict(flax.core.meta.unbox(tree))
  return {k: tuple(v.shape) for k, v in flat.items()}


def flat_shapes(params) -> dict[tuple, tuple]:
  return {k: tuple(np.shape(v)) for k, v in flax.traverse_util.flatten_dict(params).items()}


# --------------------------------------------------------------------------- key sets


def test_so400m_names_equal_the_spec_listing():
  shapes = ml_atoken.expected_shapes(config_lib.model_config("so400m"))
  assert shapes == spec_listing()
  assert len(shapes) == 563
  assert sum(math.prod(s) for s in shapes.values()) == 845_738_048
  s1 = ml_atoken.expected_shapes(config_lib.model_config("so400m", latent_dim=32))
  assert s1 == spec_listing(latent=32)
  sod = ml_atoken.expected_shapes(config_lib.model_config("so400m", quantizer="fsq"))
  assert sod == shapes  # FSQ has no tensors


def test_so400m_names_cover_the_model_tree():
  cfg = config_lib.model_config("so400m")
  ours = model_param_shapes(cfg)
  named = {n.path: n.shape for n in ml_atoken.tensor_names(cfg)}
  assert named == ours
  assert sum(math.prod(s) for s in ours.values()) == 845_738_048


@pytest.mark.parametrize("scan", [False, True])
def test_tiny_import_gives_the_model_tree(scan):
  cfg = TINY.replace(scan_layers=scan)
  params = ml_atoken.state_dict_to_params(random_state(cfg), cfg)
  assert flat_shapes(params) == model_param_shapes(cfg)
  assert all(v.dtype == np.float32 for v in jax.tree.leaves(params))
  shapes = ml_atoken.expected_shapes(cfg)
  assert len(shapes) == 12 * 2 + 8 * 2 + 23
  assert shapes["decoder.blocks.1.attn.q_rms_norm.gamma"] == (4, 16)
  assert shapes["encoder.blocks.0.attn.to_qkv.weight"] == (192, 64)


# --------------------------------------------------------------------------- layouts


def test_qkv_and_kv_rows_are_q_k_v_head_major():
  state = random_state(TINY)
  params = ml_atoken.state_dict_to_params(state, TINY)
  kernel = params["encoder"]["transformer"]["blocks_1"]["attn"]["qkv"]["kernel"]  # [C,3,H,D]
  weight = state["encoder.blocks.1.attn.to_qkv.weight"]  # [3C, C]
  c, h, d = 64, 4, 16
  for s in range(3):
    for head in range(h):
      rows = weight[s * c + head * d:s * c + (head + 1) * d]
      np.testing.assert_array_equal(kernel[:, s, head, :], rows.T)
  kv = params["head"]["key_value"]["kernel"]
  np.testing.assert_array_equal(kv[:, 1].reshape(c, c),
                                state["encoder.head.attention.to_kv.weight"][c:].T)
  out = params["encoder"]["transformer"]["blocks_0"]["attn"]["out"]["kernel"]  # [H, D, C]
  np.testing.assert_array_equal(out[2, 5], state["encoder.blocks.0.attn.to_out.weight"][:, 37])
  np.testing.assert_array_equal(params["decoder"]["transformer"]["blocks_0"]["attn"]["q_norm"]
                                ["scale"], state["decoder.blocks.0.attn.q_rms_norm.gamma"])
  np.testing.assert_array_equal(params["encoder"]["post_layernorm"]["scale"],
                                state["encoder.post_layernorm.weight"])


@pytest.mark.parametrize("scan", [False, True])
def test_import_export_is_the_identity(scan):
  cfg = TINY.replace(scan_layers=scan)
  state = random_state(cfg, seed=3)
  back = ml_atoken.params_to_state_dict(ml_atoken.state_dict_to_params(state, cfg), cfg)
  assert back.keys() == state.keys()
  for k in state:
    assert back[k].dtype == np.float32 and back[k].flags.c_contiguous
    np.testing.assert_array_equal(back[k], state[k], err_msg=k)


def test_export_reads_boxed_scanned_and_wrapped_trees():
  state = random_state(TINY, seed=4)
  flat = ml_atoken.state_dict_to_params(state, TINY, scan_layers=False)
  scanned = ml_atoken.state_dict_to_params(state, TINY, scan_layers=True)
  boxed = jax.tree.map(lambda a: nn.LogicallyPartitioned(a, (None,) * a.ndim), scanned)
  partitioned = jax.tree.map(lambda a: nn.Partitioned(a, (None,) * a.ndim), flat)
  for tree in ({"params": flat}, scanned, boxed, partitioned, flax.core.freeze(flat)):
    out = ml_atoken.params_to_state_dict(tree, TINY)
    for k in state:
      np.testing.assert_array_equal(out[k], state[k], err_msg=k)


def test_export_casts_to_bfloat16():
  state = random_state(TINY)
  out = ml_atoken.params_to_state_dict(ml_atoken.state_dict_to_params(state, TINY), TINY,
                                       dtype=ml_dtypes.bfloat16)
  assert {v.dtype for v in out.values()} == {np.dtype(ml_dtypes.bfloat16)}
  back = ml_atoken.state_dict_to_params(out, TINY)  # bf16 in, param_dtype (f32) out
  assert {v.dtype for v in jax.tree.leaves(back)} == {np.dtype(np.float32)}


def test_file_round_trip(tmp_path):
  state = random_state(TINY, seed=5)
  params = ml_atoken.state_dict_to_params(state, TINY)
  path = tmp_path / "tiny.safetensors"
  ml_atoken.save_ml_atoken(params, TINY, path)
  cfg, loaded = ml_atoken.load_ml_atoken(path, TINY_YAML)
  assert cfg == TINY
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- errors


def test_missing_extra_and_misshaped_keys_are_named():
  state = random_state(TINY)
  missing = {k: v for k, v in state.items() if k != "decoder.blocks.1.attn.k_rms_norm.gamma"}
  with pytest.raises(ValueError, match=r"missing keys \(1\): decoder\.blocks\.1\.attn"
                                       r"\.k_rms_norm\.gamma"):
    ml_atoken.state_dict_to_params(missing, TINY)
  extra = {**state, "logit_scale": np.ones(1, np.float32)}
  with pytest.raises(ValueError, match=r"unexpected keys \(1\): logit_scale"):
    ml_atoken.state_dict_to_params(extra, TINY)
  bad = {**state, "proj.weight": np.zeros((64, 64), np.float32)}
  with pytest.raises(ValueError, match=r"proj\.weight: expected \(96, 64\), got \(64, 64\)"):
    ml_atoken.state_dict_to_params(bad, TINY)


def test_export_names_missing_and_unused_parameters():
  params = ml_atoken.state_dict_to_params(random_state(TINY), TINY)
  del params["head"]["probe"]
  params["encoder"]["extra"] = {"kernel": np.zeros(3)}
  with pytest.raises(ValueError) as e:
    ml_atoken.params_to_state_dict(params, TINY)
  assert "missing parameter head/probe (for encoder.head.probe)" in str(e.value)
  assert "encoder/extra/kernel" in str(e.value)
  other = config_lib.model_config("tiny", latent_dim=32)
  with pytest.raises(ValueError, match="parameter proj/kernel has shape"):
    ml_atoken.params_to_state_dict(ml_atoken.state_dict_to_params(random_state(TINY), TINY),
                                   other)


# --------------------------------------------------------------------------- YAML configs


def test_released_yaml_layouts():
  assert ml_atoken.config_from_ml_atoken_yaml(SOC_YAML) == config_lib.model_config("so400m")
  doc = yaml.safe_load(open(SOC_YAML))
  arch = doc["model"]["model_cfg"]["arch_cfg"]
  s1 = ml_atoken.config_from_ml_atoken_yaml({**arch, "latent_channels": 32})
  assert s1 == config_lib.model_config("so400m", latent_dim=32)
  sod = {**arch, "use_quantizer": True, "quantizer_type": "fsq",
         "quantizer_codebook_size": 4096, "quantizer_feature_dim": 48,
         "quantizer_num_codebooks": 8, "quantizer_chunk_size": 1}
  assert ml_atoken.config_from_ml_atoken_yaml(sod) == config_lib.model_config(
      "so400m", quantizer="fsq")
  assert ml_atoken.config_from_ml_atoken_yaml(TINY_YAML) == TINY
  scanned = ml_atoken.config_from_ml_atoken_yaml(TINY_YAML, scan_layers=True, remat="full")
  assert scanned == TINY.replace(scan_layers=True, remat="full")


def test_pe_mode_learned_turns_rope_off():
  arch = yaml.safe_load(open(TINY_YAML))["model"]["model_cfg"]["arch_cfg"]
  learned = {**arch, "encoder_pe_mode": "learned", "decoder_pe_mode": "learned"}
  assert ml_atoken.config_from_ml_atoken_yaml(learned) == TINY.replace(use_rope=False)
  with pytest.raises(ValueError, match="'decoder_pe_mode' = 'joint' must equal"):
    ml_atoken.config_from_ml_atoken_yaml({**arch, "encoder_pe_mode": "learned"})


def test_arch_cfg_round_trip():
  for cfg in (TINY, TINY.replace(use_rope=False), config_lib.model_config("so400m"),
              config_lib.model_config("base")):
    assert ml_atoken.config_from_ml_atoken_yaml(ml_atoken.arch_cfg_from_config(cfg)) == cfg


@pytest.mark.parametrize("key, value, message", [
    ("encoder_window_sizes", 8, "unknown arch_cfg key"),
    ("encoder_attn_mode", "swin", "'encoder_attn_mode' = 'swin' is not supported"),
    ("decoder_pe_mode", "rope", "'decoder_pe_mode' = 'rope' is not supported"),
    ("encoder_qk_rms_norm", True, "'encoder_qk_rms_norm' = True is not supported"),
    ("decoder_use_bias", True, "'decoder_use_bias' = True is not supported"),
    ("patch_size", [1, 16, 16], "'patch_size'"),
    ("use_decoder", False, "'use_decoder'"),
    ("quantizer_type", "lfq", "'quantizer_type' = 'lfq' is not supported"),
    ("quantizer_chunk_size", 2, "'quantizer_chunk_size'"),
    ("quantizer_codebook_size", 1000, "'quantizer_codebook_size' = 1000"),
    ("quantizer_num_codebooks", 4, "'quantizer_num_codebooks'"),
    ("quantizer_feature_dim", 32, "'quantizer_feature_dim' = 32"),
    ("encoder_num_heads", None, "'encoder_num_heads' must be set"),
    ("decoder_mlp_channels", 12.5, "'decoder_mlp_channels' must be a positive integer"),
])
def test_unsupported_settings_name_the_key(key, value, message):
  arch = yaml.safe_load(open(TINY_YAML))["model"]["model_cfg"]["arch_cfg"]
  with pytest.raises(ValueError, match=message.replace("[", r"\[")):
    ml_atoken.config_from_ml_atoken_yaml({**arch, key: value})


def test_defaults_are_ml_atokens_and_bad_overrides_fail():
  arch = yaml.safe_load(open(SOC_YAML))["model"]["model_cfg"]["arch_cfg"]
  del arch["encoder_use_rms_norm"]  # default False: still fine
  assert ml_atoken.config_from_ml_atoken_yaml(arch).encoder.width == 1152
  del arch["encoder_qk_rms_norm"]  # AutoencoderKLConfig's default is True: not ours
  with pytest.raises(ValueError, match="'encoder_qk_rms_norm' = True"):
    ml_atoken.config_from_ml_atoken_yaml(arch)
  with pytest.raises(ValueError, match="unknown ModelConfig override"):
    ml_atoken.config_from_ml_atoken_yaml(TINY_YAML, scan=True)
  with pytest.raises(ValueError, match="missing 'arch_cfg'"):
    ml_atoken.config_from_ml_atoken_yaml({"model": {"model_cfg": {}}})


def test_mlp_channels_may_be_an_integral_float():
  arch = yaml.safe_load(open(TINY_YAML))["model"]["model_cfg"]["arch_cfg"]
  cfg = ml_atoken.config_from_ml_atoken_yaml({**arch, "encoder_mlp_channels": 128.0})
  assert cfg.encoder.mlp_dim == 128 and isinstance(cfg.encoder.mlp_dim, int)


def test_check_keys_is_called_with_the_source_name(tmp_path):
  path = tmp_path / "bad.safetensors"
  state = random_state(TINY)
  state.pop("proj.weight")
  checkpoint_io.save_state_dict(state, path)
  with pytest.raises(ValueError, match=r"bad\.safetensors does not match.*\n.*proj\.weight"):
    ml_atoken.load_ml_atoken(path, TINY_YAML)
