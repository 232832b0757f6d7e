"""FID InceptionV3: parity with pytorch-fid's InceptionV3 on the same random weights.

pytorch-fid builds its network on torchvision's Inception classes, and torchvision cannot be
installed beside this torch. A minimal stand-in ``torchvision`` (torchvision's InceptionV3 layer
layout in plain torch.nn: BasicConv2d, InceptionA-E, ``inception_v3``) is placed in sys.modules
while pytorch_fid is imported and its model built, and removed afterwards. pytorch-fid's own FID
patches (count_include_pad=False average pools, the max pool of Mixed_7c), its 299 bilinear resize
and its input scaling run unchanged. Weights go from our random params through a .pth file that
pytorch-fid loads with ``load_state_dict(strict=True)`` and that our loader reads back.
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from atoken_jax.features import inception  # noqa: E402
from atoken_jax.interop import pytorch_fid as fid_interop  # noqa: E402
from tests.module_standins import standin_modules  # noqa: E402


class _BasicConv2d(nn.Module):
  def __init__(self, cin, cout, **kw):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
    self.bn = nn.BatchNorm2d(cout, eps=0.001)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


class _InceptionA(nn.Module):
  def __init__(self, cin, pool_features):
    super().__init__()
    self.branch1x1 = _BasicConv2d(cin, 64, kernel_size=1)
    self.branch5x5_1 = _BasicConv2d(cin, 48, kernel_size=1)
    self.branch5x5_2 = _BasicConv2d(48, 64, kernel_size=5, padding=2)
    self.branch3x3dbl_1 = _BasicConv2d(cin, 64, kernel_size=1)
    self.branch3x3dbl_2 = _BasicConv2d(64, 96, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = _BasicConv2d(96, 96, kernel_size=3, padding=1)
    self.branch_pool = _BasicConv2d(cin, pool_features, kernel_size=1)


class _InceptionB(nn.Module):
  def __init__(self, cin):
    super().__init__()
    self.branch3x3 = _BasicConv2d(cin, 384, kernel_size=3, stride=2)
    self.branch3x3dbl_1 = _BasicConv2d(cin, 64, kernel_size=1)
    self.branch3x3dbl_2 = _BasicConv2d(64, 96, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = _BasicConv2d(96, 96, kernel_size=3, stride=2)

  def forward(self, x):
    b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return torch.cat([self.branch3x3(x), b, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _InceptionC(nn.Module):
  def __init__(self, cin, channels_7x7):
    super().__init__()
    c7 = channels_7x7
    self.branch1x1 = _BasicConv2d(cin, 192, kernel_size=1)
    self.branch7x7_1 = _BasicConv2d(cin, c7, kernel_size=1)
    self.branch7x7_2 = _BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7_3 = _BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = _BasicConv2d(cin, c7, kernel_size=1)
    self.branch7x7dbl_2 = _BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = _BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = _BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = _BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
    self.branch_pool = _BasicConv2d(cin, 192, kernel_size=1)


class _InceptionD(nn.Module):
  def __init__(self, cin):
    super().__init__()
    self.branch3x3_1 = _BasicConv2d(cin, 192, kernel_size=1)
    self.branch3x3_2 = _BasicConv2d(192, 320, kernel_size=3, stride=2)
    self.branch7x7x3_1 = _BasicConv2d(cin, 192, kernel_size=1)
    self.branch7x7x3_2 = _BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7x3_3 = _BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7x3_4 = _BasicConv2d(192, 192, kernel_size=3, stride=2)

  def forward(self, x):
    b3 = self.branch3x3_2(self.branch3x3_1(x))
    b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _InceptionE(nn.Module):
  def __init__(self, cin):
    super().__init__()
    self.branch1x1 = _BasicConv2d(cin, 320, kernel_size=1)
    self.branch3x3_1 = _BasicConv2d(cin, 384, kernel_size=1)
    self.branch3x3_2a = _BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3_2b = _BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = _BasicConv2d(cin, 448, kernel_size=1)
    self.branch3x3dbl_2 = _BasicConv2d(448, 384, kernel_size=3, padding=1)
    self.branch3x3dbl_3a = _BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = _BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
    self.branch_pool = _BasicConv2d(cin, 192, kernel_size=1)


class _Inception3(nn.Module):
  """torchvision's Inception3 stem and grid reductions; pytorch-fid swaps in the rest."""

  def __init__(self, num_classes=1000, aux_logits=True, weights=None, init_weights=None):
    super().__init__()
    assert weights is None and not aux_logits
    self.Conv2d_1a_3x3 = _BasicConv2d(3, 32, kernel_size=3, stride=2)
    self.Conv2d_2a_3x3 = _BasicConv2d(32, 32, kernel_size=3)
    self.Conv2d_2b_3x3 = _BasicConv2d(32, 64, kernel_size=3, padding=1)
    self.Conv2d_3b_1x1 = _BasicConv2d(64, 80, kernel_size=1)
    self.Conv2d_4a_3x3 = _BasicConv2d(80, 192, kernel_size=3)
    self.Mixed_6a = _InceptionB(288)
    self.Mixed_7a = _InceptionD(768)
    self.fc = nn.Linear(2048, num_classes)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """pytorch-fid's InceptionV3 (all four blocks) loaded from a .pth of our random params."""
  params = inception.random_params(seed=0)
  state = {k: torch.from_numpy(v) for k, v in fid_interop.params_to_state_dict(params).items()}
  g = torch.Generator().manual_seed(1)
  state["fc.weight"] = torch.randn(1008, 2048, generator=g) * 0.01
  state["fc.bias"] = torch.zeros(1008)
  path = tmp_path_factory.mktemp("fid") / fid_interop.FILE_NAME
  torch.save(state, path)

  names = ("torchvision", "torchvision.models", "torchvision.models.inception")
  # pytorch_fid's classes subclass the stand-ins: forget them afterwards
  with standin_modules(*names, forget_prefixes=("pytorch_fid",)) as mods:
    tv, models, inc = (mods[k] for k in names)
    tv.__version__, tv.models, models.inception = "0.20.0", models, inc
    inc.InceptionA, inc.InceptionC, inc.InceptionE = _InceptionA, _InceptionC, _InceptionE
    models.inception_v3 = _Inception3
    pf = pytest.importorskip("pytorch_fid.inception")
    pf.load_state_dict_from_url = lambda url, progress=True: torch.load(path, weights_only=True)
    model = pf.InceptionV3(output_blocks=(0, 1, 2, 3)).eval()
  return model, path


def test_features_match_pytorch_fid(reference):
  model, path = reference
  params = fid_interop.load_fid_inception(path)
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, 80, 96, 3)).astype(np.float32)  # non-square, resized to 299
  with torch.no_grad():
    want = model(torch.from_numpy((x + 1) / 2).permute(0, 3, 1, 2))
  got = jax.jit(lambda p, x: inception.FIDInceptionV3().apply({"params": p}, x, (0, 1, 2, 3)))(
      params, x)
  for block, w in enumerate(want):
    w = w.numpy().transpose(0, 2, 3, 1)
    if block == 3:
      w = w[:, 0, 0]
    g = np.asarray(got[block])
    assert g.shape == w.shape and g.shape[-1] == inception.BLOCK_DIMS[block]
    scale = np.abs(w).max()
    assert scale > 1e-2, "random weights should keep activations alive"
    np.testing.assert_allclose(g, w, atol=2e-4 * scale, rtol=0, err_msg=f"block {block}")


def test_loader_rejects_wrong_names_and_round_trips_npz(reference, tmp_path):
  _, path = reference
  params = fid_interop.load_fid_inception(path)
  out = tmp_path / "inception.npz"
  fid_interop.save_fid_inception_params(params, out)
  again = fid_interop.load_fid_inception(out)
  flat = lambda t: {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(t)}
  a, b = flat(params), flat(again)
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  state = fid_interop.params_to_state_dict(params)
  state["Mixed_5b.branch1x1.conv.weight"] = state["Mixed_5b.branch1x1.conv.weight"][:1]
  with pytest.raises(ValueError, match="shape"):
    fid_interop.state_dict_to_params(state)
  del state["Mixed_5b.branch1x1.conv.weight"]
  with pytest.raises(ValueError, match="missing"):
    fid_interop.state_dict_to_params(state)
