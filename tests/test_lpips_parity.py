"""LPIPS parity with the lpips PyTorch package on the same random trunk weights.

torchvision cannot be installed beside this torch, so a minimal stand-in ``torchvision.models``
(torchvision's VGG16/AlexNet ``features`` layouts in plain torch.nn) is placed in sys.modules while
lpips is imported and its models are built, and removed afterwards. Weights travel from torch to
Flax through the same files and loader a user would use.
"""


import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from atoken_jax.perceptual import LPIPS, load_lpips_params, save_lpips_params  # noqa: E402
from tests.module_standins import standin_modules  # noqa: E402

_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M")


class _Trunk(nn.Module):
  def __init__(self, features):
    super().__init__()
    self.features = features


def _vgg16(pretrained=False, **_):
  assert not pretrained, "the stand-in has no pretrained weights"
  layers, cin = [], 3
  for v in _VGG16_CFG:
    if v == "M":
      layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    else:
      layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
      cin = v
  return _Trunk(nn.Sequential(*layers))


def _alexnet(pretrained=False, **_):
  assert not pretrained, "the stand-in has no pretrained weights"
  return _Trunk(nn.Sequential(
      nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
      nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
      nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
      nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
      nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2)))


@pytest.fixture(scope="module")
def torch_lpips():
  """Builds lpips.LPIPS(net) models with random trunks behind a stand-in torchvision."""
  with standin_modules("torchvision", "torchvision.models") as mods:
    tv, models = mods["torchvision"], mods["torchvision.models"]
    models.vgg16, models.alexnet = _vgg16, _alexnet
    tv.models = models
    lpips = pytest.importorskip("lpips")
    torch.manual_seed(0)
    built = {net: lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
             for net in ("vgg", "alex")}
    # He-normal trunk (as torchvision initialises VGG) so that every tap, not only the first,
    # carries a distance of a similar size; PyTorch's default init shrinks relu5_3 to ~1e-8.
    with torch.no_grad():
      for model in built.values():
        for mod in model.net.modules():
          if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_in", nonlinearity="relu")
            nn.init.uniform_(mod.bias, -0.1, 0.1)
  return built


def _torchvision_state_dict(model):
  """The trunk as a torchvision ``features.{i}.*`` state dict (plus an ignored classifier key)."""
  sd = {}
  for sl in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4,
             model.net.slice5):
    for idx, mod in sl.named_children():
      if isinstance(mod, nn.Conv2d):
        sd[f"features.{idx}.weight"] = mod.weight.detach().clone()
        sd[f"features.{idx}.bias"] = mod.bias.detach().clone()
  sd["classifier.0.weight"] = torch.zeros(4, 4)
  return sd


def _images(seed, n=2, size=64):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
  return x, y


def _torch_forward(model, x, y):
  to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    total, layers = model(to_t(x), to_t(y), retPerLayer=True)
  return total.numpy().reshape(-1), [v.numpy().reshape(-1) for v in layers]


def _check(params, net, model, seed):
  x, y = _images(seed)
  want, want_layers = _torch_forward(model, x, y)
  got, got_layers = jax.jit(lambda p, a, b: LPIPS(net=net).apply({"params": p}, a, b,
                                                                   per_layer=True))(params, x, y)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for g, w in zip(got_layers, want_layers):  # every tap carries ~1e-3 here (see the fixture)
    assert np.min(w) > 1e-4
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)
  assert np.all(np.asarray(got) > 0)


def test_vgg_parity_with_packaged_linear_layers(torch_lpips, tmp_path):
  model = torch_lpips["vgg"]
  torch.save(_torchvision_state_dict(model), tmp_path / "vgg16-random.pth")
  params = load_lpips_params("vgg", backbone_path=tmp_path / "vgg16-random.pth")  # wheel's lins
  _check(params, "vgg", model, seed=0)


def test_alex_parity_random_linear_layers_and_safetensors(torch_lpips, tmp_path):
  model = torch_lpips["alex"]
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for lin in model.lins:
      lin.model[1].weight.copy_(torch.rand(lin.model[1].weight.shape, generator=gen))
  lin_sd = {k: v for k, v in model.state_dict().items() if k.startswith("lin")}
  torch.save(lin_sd, tmp_path / "alex-lin.pth")
  torch.save(_torchvision_state_dict(model), tmp_path / "alexnet-random.pth")
  params = load_lpips_params("alex", backbone_path=tmp_path / "alexnet-random.pth",
                             linear_path=tmp_path / "alex-lin.pth")
  _check(params, "alex", model, seed=1)
  # the converted single file gives identical parameters and outputs
  save_lpips_params(params, tmp_path / "lpips_alex.safetensors", "alex")
  again = load_lpips_params("alex", path=tmp_path / "lpips_alex.safetensors")
  jax.tree.map(np.testing.assert_array_equal, again, params)
  _check(again, "alex", model, seed=2)
