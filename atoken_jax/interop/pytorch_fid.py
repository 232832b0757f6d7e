"""pytorch-fid's InceptionV3 weights <-> `atoken_jax.features.inception.FIDInceptionV3` params.

The weights every FID is computed with are TensorFlow's ``inception-2015-12-05`` graph, which
pytorch-fid publishes as ``pt_inception-2015-12-05-6726825d.pth`` (a plain state dict, from
github.com/mseitzer/pytorch-fid/releases). We never download it: a user who has the file passes
its path; it is read with ``torch.load(weights_only=True)`` (no arbitrary unpickling), or from a
``.safetensors`` / ``.npz`` copy written by :func:`save_fid_inception_params` (no torch needed).

Names: torchvision's ``Mixed_5b.branch1x1.conv.weight`` ``[O, I, kh, kw]`` becomes
``Mixed_5b/branch1x1/conv/kernel`` ``[kh, kw, I, O]``; ``….bn.{weight, bias, running_mean,
running_var}`` become ``…/bn/{scale, bias, mean, var}``. ``fc.*`` (the 1008-way classifier) and
``num_batches_tracked`` are not used by FID and are ignored.
"""
from __future__ import annotations

import pathlib
from typing import Mapping

import numpy as np

from atoken_jax.features import inception
from atoken_jax.interop import nested
from atoken_jax.perceptual.weights import read_tensors

FILE_NAME = "pt_inception-2015-12-05-6726825d.pth"
_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_BN_INV = {v: k for k, v in _BN.items()}
_IGNORED_PREFIXES = ("fc.", "AuxLogits.")



def state_dict_to_params(state: Mapping[str, np.ndarray], blocks=(3,)) -> dict:
  """pytorch-fid state dict (numpy values) → nested float32 params; checks names and shapes.

  Raises ValueError listing missing / unexpected / mis-shaped tensors.
  """
  full = dict(nested.walk(inception.param_shapes((3,))))
  want = full if max(blocks) == 3 else dict(nested.walk(inception.param_shapes(blocks)))
  params, unexpected = {}, []
  for key, value in state.items():
    if key.endswith("num_batches_tracked") or key.startswith(_IGNORED_PREFIXES):
      continue
    *mods, layer, leaf = key.split(".")
    value = np.asarray(value, np.float32)
    if layer == "conv" and leaf == "weight" and value.ndim == 4:
      path, value = tuple(mods) + ("conv", "kernel"), value.transpose(2, 3, 1, 0)
    elif layer == "bn" and leaf in _BN:
      path = tuple(mods) + ("bn", _BN[leaf])
    else:
      unexpected.append(key)
      continue
    if path not in full:
      unexpected.append(key)
      continue
    if path not in want:  # a later block than requested
      continue
    if tuple(value.shape) != want[path]:
      raise ValueError(f"pytorch-fid weights: {key} has shape {value.shape}, expected "
                       f"{want[path]} (after OIHW->HWIO)")
    node = params
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = value
  got = set(p for p, _ in nested.walk(params))
  missing = sorted("/".join(p) for p in want if p not in got)
  if missing or unexpected:
    raise ValueError(f"pytorch-fid weights do not match FIDInceptionV3: missing {missing[:6]}"
                     f"{'...' if len(missing) > 6 else ''} ({len(missing)}), unexpected "
                     f"{unexpected[:6]} ({len(unexpected)})")
  return params


def params_to_state_dict(params) -> dict[str, np.ndarray]:
  """Inverse of :func:`state_dict_to_params` (without ``fc.*``): torch names, OIHW kernels."""
  out = {}
  for path, value in nested.walk(params):
    value = np.asarray(value, np.float32)
    *mods, layer, leaf = path
    if layer == "conv":
      out[".".join(mods) + ".conv.weight"] = np.ascontiguousarray(value.transpose(3, 2, 0, 1))
    else:
      out[".".join(mods) + ".bn." + _BN_INV[leaf]] = value
  return out


def load_fid_inception(path, blocks=(3,)) -> dict:
  """Params of ``FIDInceptionV3`` from the user's ``pt_inception-2015-12-05-6726825d.pth``
  (torch, weights_only) or a ``.safetensors`` / ``.npz`` copy (torch or our names)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(
        f"FID Inception weights not found at {path}: get {FILE_NAME} from pytorch-fid's "
        "releases (github.com/mseitzer/pytorch-fid) and pass its path")
  tensors, _ = read_tensors(path)
  if any("/" in k for k in tensors):  # our own flat layout (save_fid_inception_params)
    tensors = params_to_state_dict(nested.unflatten(tensors))
  return state_dict_to_params(tensors, blocks)


def save_fid_inception_params(params, path) -> None:
  """Writes params as one flat ``.safetensors`` or ``.npz`` (keys ``Mixed_5b/branch1x1/…``)."""
  flat = {k: np.ascontiguousarray(np.asarray(v, np.float32))
          for k, v in nested.flatten(params).items()}
  path = pathlib.Path(path)
  if path.suffix == ".safetensors":
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
    save_file(flat, str(path), metadata={"format": "atoken_jax.fid_inception/1"})
  elif path.suffix == ".npz":
    np.savez(path, **flat)
  else:
    raise ValueError(f"{path}: write .safetensors or .npz")
