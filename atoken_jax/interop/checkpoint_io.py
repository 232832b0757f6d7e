"""Reading and writing flat name -> array state dicts (safetensors, PyTorch .pt) and YAML configs.

Nothing here executes pickled code: safetensors is a plain header + bytes format, and `.pt`
files are read with `torch.load(weights_only=True)`, which refuses anything but tensors and
plain containers. bfloat16 tensors come back as `ml_dtypes.bfloat16` numpy arrays.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Mapping

import ml_dtypes
import numpy as np

from atoken_jax.atomic_write import write_atomic

StateDict = dict[str, np.ndarray]


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("reading or writing .pt files needs PyTorch: pip install "
                      "'atoken-jax[torch]' (or use .safetensors)") from e
  return torch


def _tensor_to_numpy(t) -> np.ndarray:
  torch = _torch()
  t = t.detach().cpu().contiguous()
  if t.dtype == torch.bfloat16:
    return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.numpy()


def _numpy_to_tensor(a: np.ndarray):
  torch = _torch()
  a = np.ascontiguousarray(a)
  if a.dtype == ml_dtypes.bfloat16:
    return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
  return torch.from_numpy(a)


def load_state_dict(path: str | os.PathLike) -> StateDict:
  """Reads a flat state dict from `.safetensors` or `.pt`/`.pth`/`.bin` (weights only)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  if path.endswith(".safetensors"):
    from safetensors import SafetensorError  # pylint: disable=import-outside-toplevel
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    try:
      return dict(load_file(path))
    except SafetensorError as e:
      raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
  if path.endswith((".pt", ".pth", ".bin")):
    torch = _torch()
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message would suggest unpickling it anyway
      raise ValueError(f"{path}: refused: not a weights-only PyTorch file (it is corrupt, or "
                       "holds pickled objects other than tensors, which are never unpickled "
                       "here); use .safetensors") from None
    except RuntimeError as e:  # a truncated or foreign zip archive
      raise ValueError(f"{path}: not a readable PyTorch file ({str(e).splitlines()[0]})") from None
    if not isinstance(obj, Mapping):
      raise ValueError(f"{path}: expected a flat name -> tensor mapping, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
      if not isinstance(v, torch.Tensor):
        raise ValueError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; expected a "
                         "flat state dict without wrapper keys")
      out[k] = _tensor_to_numpy(v)
    return out
  raise ValueError(f"{path}: unknown checkpoint format; use .safetensors or .pt")


def save_state_dict(state: Mapping[str, np.ndarray], path: str | os.PathLike,
                    metadata: Mapping[str, str] | None = None) -> None:
  """Writes a flat state dict as `.safetensors` or `.pt` (a dict of tensors, no wrapper)."""
  path = os.fspath(path)
  state = {k: np.ascontiguousarray(v) for k, v in state.items()}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if path.endswith(".safetensors"):
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
    write_atomic(path, lambda tmp: save_file(state, tmp, metadata=dict(metadata or {})))
  elif path.endswith((".pt", ".pth", ".bin")):
    torch = _torch()
    write_atomic(path, lambda tmp: torch.save(
        {k: _numpy_to_tensor(v) for k, v in state.items()}, tmp))
  else:
    raise ValueError(f"{path}: unknown checkpoint format; use .safetensors or .pt")


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
  import yaml  # pylint: disable=import-outside-toplevel
  with open(path) as f:
    cfg = yaml.safe_load(f)
  if not isinstance(cfg, dict):
    raise ValueError(f"{path}: expected a YAML mapping at the top level")
  return cfg


def check_keys(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, np.ndarray],
               source: str, ignore_prefixes: tuple[str, ...] = ()) -> None:
  """Raises one ValueError naming every missing, unexpected and mis-shaped key."""
  got = {k for k in state if not k.startswith(ignore_prefixes)}
  missing = sorted(set(expected) - got)
  extra = sorted(got - set(expected))
  shapes = sorted(f"{k}: expected {tuple(expected[k])}, got {tuple(state[k].shape)}"
                  for k in set(expected) & got if tuple(state[k].shape) != tuple(expected[k]))
  if missing or extra or shapes:
    lines = [f"{source} does not match the model:"]
    if missing:
      lines.append(f"  missing keys ({len(missing)}): " + ", ".join(missing[:20]))
    if extra:
      lines.append(f"  unexpected keys ({len(extra)}): " + ", ".join(extra[:20]))
    if shapes:
      lines.append("  wrong shapes: " + "; ".join(shapes[:20]))
    raise ValueError("\n".join(lines))
