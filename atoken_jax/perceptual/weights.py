"""Loading LPIPS parameters from files a user has, and writing one converted file.

Accepted sources (any tensor container: ``.pth``/``.pt``/``.bin`` via ``torch.load(weights_only=
True)``, ``.safetensors``, ``.npz`` with ``allow_pickle=False``), recognised by their key names:

* torchvision backbone state dicts — ``features.{i}.weight`` (OIHW) / ``.bias``, e.g.
  ``vgg16-397923af.pth``, ``alexnet-owt-7be5be79.pth``; ``classifier.*`` keys are ignored;
* the lpips package's linear layers — ``lin{k}.model.1.weight`` ``[1, C, 1, 1]`` (``model.0`` when
  trained without dropout); ``lpips/weights/v0.1/{vgg,alex}.pth`` ship inside its wheel and are
  found without importing lpips (which would import torchvision);
* this package's own layout — ``backbone/conv1_1/kernel`` (HWIO), ``lin0/kernel`` ``[C, 1]``, …,
  written by :func:`save_lpips_params` / ``tools/convert_lpips_weights.py``; loading it runs no
  pickle.

Nothing is downloaded.
"""

import importlib.metadata
import importlib.util
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

from atoken_jax.interop.nested import flatten, unflatten
from atoken_jax.perceptual.alexnet import ALEXNET_TORCHVISION_INDEX
from atoken_jax.perceptual.lpips import LPIPS, canonical_net
from atoken_jax.perceptual.vgg import VGG16_TORCHVISION_INDEX

FORMAT_TAG = "atoken_jax.lpips/1"
_TV_INDEX = {"vgg": VGG16_TORCHVISION_INDEX, "alex": ALEXNET_TORCHVISION_INDEX}
_TV_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
_LIN_KEY = re.compile(r"^lin(\d+)\.model\.[01]\.weight$")


def read_tensors(path):
  """Reads a flat ``{name: np.ndarray}`` from .pth/.pt/.bin (torch, weights_only), .safetensors
  or .npz (no pickles). Returns ``(tensors, metadata)``; metadata is a dict (safetensors only)."""
  path = pathlib.Path(path)
  suffix = path.suffix.lower()
  if suffix == ".safetensors":
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
      return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
  if suffix == ".npz":
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}, {}
  if suffix in (".pth", ".pt", ".bin"):
    import torch  # optional dependency, only for PyTorch files
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
      raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return {k: v.detach().float().numpy() for k, v in sd.items() if hasattr(v, "detach")}, {}
  raise ValueError(f"{path}: unknown weight file type {suffix!r} (.pth, .safetensors, .npz)")


def packaged_linear_path(net):
  """Path of ``lpips/weights/v0.1/{vgg,alex}.pth`` inside an installed lpips package.

  ``importlib.resources.files("lpips")`` would import lpips, which imports torchvision; the
  package is located with ``importlib.util.find_spec`` instead, which executes none of its code.
  """
  net = canonical_net(net)
  spec = importlib.util.find_spec("lpips")
  roots = list(spec.submodule_search_locations or []) if spec else []
  if not roots:
    try:
      roots = [importlib.metadata.distribution("lpips").locate_file("lpips")]
    except importlib.metadata.PackageNotFoundError:
      pass
  for root in roots:
    p = pathlib.Path(root) / "weights" / "v0.1" / f"{net}.pth"
    if p.is_file():
      return p
  raise FileNotFoundError(
      f"LPIPS linear weights for {net!r} not found: install the lpips package "
      "(`pip install --no-deps lpips==0.1.4`) or pass linear_path=…")




def params_from_tensors(net, tensors):
  """Partial LPIPS params from one file's tensors, whatever of the three layouts they use.

  Returns a dict with "backbone" and/or "lin{k}" entries (float32 numpy).
  """
  net = canonical_net(net)
  out = {}
  ours = {k: v for k, v in tensors.items() if "/" in k}
  if ours:
    out.update(unflatten({k: np.asarray(v, np.float32) for k, v in ours.items()}))
  if any(k.startswith("features.") for k in tensors):
    bb = {}
    for name, idx in _TV_INDEX[net].items():
      w, b = tensors.get(f"features.{idx}.weight"), tensors.get(f"features.{idx}.bias")
      if w is None or b is None:
        raise KeyError(f"torchvision {net} state dict lacks features.{idx}.weight/bias ({name})")
      bb[name] = {"kernel": np.transpose(np.asarray(w, np.float32), (2, 3, 1, 0)),
                  "bias": np.asarray(b, np.float32)}
    out["backbone"] = bb
  for k, v in tensors.items():
    m = _LIN_KEY.match(k)
    if m:
      v = np.asarray(v, np.float32)
      out[f"lin{m.group(1)}"] = {"kernel": v.reshape(v.shape[1], 1)}
  return out


def expected_shapes(net):
  """``{flat name: shape}`` of an LPIPS(net) parameter tree."""
  shapes = jax.eval_shape(lambda: LPIPS(net=net).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 64, 3))))["params"]
  return {k: tuple(v.shape) for k, v in flatten(dict(shapes)).items()}


def check_params(net, params):
  """Raises ValueError naming every missing, unexpected or mis-shaped entry, or a negative
  linear weight."""
  want = expected_shapes(net)
  got = {k: tuple(np.shape(v)) for k, v in flatten(params).items()}
  problems = [f"missing {k} {s}" for k, s in want.items() if k not in got]
  problems += [f"unexpected {k}" for k in got if k not in want]
  problems += [f"{k}: shape {got[k]} != {s}" for k, s in want.items() if k in got and got[k] != s]
  if problems:
    raise ValueError(f"LPIPS({net}) params do not fit: " + "; ".join(problems[:8]))
  for name in sorted(k for k in params if k.startswith("lin")):
    if np.min(params[name]["kernel"]) < 0:
      raise ValueError(f"LPIPS linear layer {name} has negative weights; LPIPS needs w >= 0")


def load_lpips_params(net="vgg", backbone_path=None, linear_path=None, path=None):
  """LPIPS parameters from user files (nothing is downloaded).

  Args:
    net: 'vgg' or 'alex'.
    backbone_path: torchvision trunk weights (``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``,
      or a .safetensors/.npz with the same or our key names).
    linear_path: lpips linear layers; default: the ``{net}.pth`` inside the installed lpips wheel.
    path: one file converted by ``tools/convert_lpips_weights.py`` holding everything; if given,
      the other two are ignored.

  Returns:
    Nested dict of float32 numpy arrays for ``LPIPS(net).apply({"params": params}, x, y)``.
  """
  net = canonical_net(net)
  if path is not None:
    tensors, meta = read_tensors(path)
    if meta.get("net") and canonical_net(meta["net"]) != net:
      raise ValueError(f"{path} holds LPIPS({meta['net']}) weights, not {net}")
    params = params_from_tensors(net, tensors)
  else:
    if backbone_path is None:
      raise ValueError(
          f"LPIPS({net}) needs the ImageNet trunk: pass backbone_path= (torchvision's "
          f"{_TV_FILES[net]}) or path= (a file from tools/convert_lpips_weights.py)")
    params = {"backbone": params_from_tensors(net, read_tensors(backbone_path)[0]).get("backbone")}
    if params["backbone"] is None:
      raise ValueError(f"{backbone_path}: no backbone weights (features.* or backbone/*) found")
    lin = params_from_tensors(net, read_tensors(linear_path or packaged_linear_path(net))[0])
    params.update({k: v for k, v in lin.items() if k.startswith("lin")})
  check_params(net, params)
  return params


def random_lpips_params(net="vgg", seed=0):
  """Random LPIPS parameters (float32 numpy) for tests and CPU smoke runs without real weights.

  He-normal conv kernels (fan-in, as for ReLU nets, so every tap keeps a similar scale), biases
  uniform in ±0.1, linear layers uniform in [0, 1) (non-negative). Drawn with numpy: much faster
  on CPU than ``LPIPS(net).init`` for the 14.7 M VGG16 parameters.
  """
  rng = np.random.default_rng(seed)
  flat = {}
  for name, shape in sorted(expected_shapes(net).items()):
    if name.endswith("/bias"):
      flat[name] = rng.uniform(-0.1, 0.1, shape)
    elif name.startswith("lin"):
      flat[name] = rng.uniform(0.0, 1.0, shape)
    else:  # HWIO conv kernel
      fan_in = shape[0] * shape[1] * shape[2]
      flat[name] = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
  return unflatten({k: v.astype(np.float32) for k, v in flat.items()})


def save_lpips_params(params, path, net):
  """Writes LPIPS params as one flat .safetensors (with ``net`` metadata) or .npz file."""
  net = canonical_net(net)
  check_params(net, params)
  flat = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flatten(params).items()}
  path = pathlib.Path(path)
  if path.suffix == ".safetensors":
    from safetensors.numpy import save_file
    save_file(flat, str(path), metadata={"format": FORMAT_TAG, "net": net})
  elif path.suffix == ".npz":
    np.savez(path, **flat)
  else:
    raise ValueError(f"{path}: write .safetensors or .npz")
  return path
