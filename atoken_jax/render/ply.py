"""Gaussians ⇄ the standard 3DGS `.ply` layout read by SuperSplat, the INRIA viewer and others.

One `vertex` element, binary little-endian float32 properties, in this order:
  x y z · nx ny nz (zeros) · f_dc_0..2 · f_rest_0..(3·(M−1)−1) · opacity · scale_0..2 · rot_0..3
Stored values are the *raw* 3DGS parameters: f_dc is the degree-0 SH coefficient
((rgb − 0.5) / 0.28209479), opacity is a logit, scales are natural logs, rot is the quaternion
(w, x, y, z). f_rest (only for SH degree ≥ 1) is channel-major: all R coefficients, then G, then B.
"""
from __future__ import annotations

import os

import numpy as np

from atoken_jax.render.sh import SH_C0, sh_degree_from_coeffs

_PLY_TYPES = {"float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1",
              "uint8": "u1", "char": "i1", "int8": "i1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4",
              "uint32": "u4"}
_EPS = 1e-7


def gaussians_to_ply_fields(means, scales, quats_wxyz, opacities, colors) -> dict[str, np.ndarray]:
  """Activated Gaussians → the raw per-vertex fields of a 3DGS .ply, name → [N] float32.

  means [N, 3]; scales [N, 3] (> 0); quats_wxyz [N, 4]; opacities [N] in [0, 1];
  colors [N, 3] RGB (stored as SH degree 0) or [N, M, 3] SH coefficients (M = 1, 4, 9, 16).
  """
  means = np.asarray(means, np.float64)
  n = means.shape[0]
  scales = np.asarray(scales, np.float64)
  quats = np.asarray(quats_wxyz, np.float64)
  opacities = np.asarray(opacities, np.float64)
  colors = np.asarray(colors, np.float64)
  expected = {"means": (means, (n, 3)), "scales": (scales, (n, 3)), "quats_wxyz": (quats, (n, 4)),
              "opacities": (opacities, (n,))}
  for name, (value, shape) in expected.items():
    if value.shape != shape:
      raise ValueError(f"{name} must have shape {list(shape)}, got {value.shape}")
  if colors.ndim == 2:
    if colors.shape != (n, 3):
      raise ValueError(f"colors must be [N, 3] RGB or [N, M, 3] SH, got {colors.shape}")
    colors = ((colors - 0.5) / SH_C0)[:, None, :]
  elif colors.ndim != 3 or colors.shape[0] != n or colors.shape[2] != 3:
    raise ValueError(f"colors must be [N, 3] RGB or [N, M, 3] SH, got {colors.shape}")
  sh_degree_from_coeffs(colors.shape[1])

  fields = {"x": means[:, 0], "y": means[:, 1], "z": means[:, 2]}
  fields.update({name: np.zeros(n) for name in ("nx", "ny", "nz")})
  fields.update({f"f_dc_{c}": colors[:, 0, c] for c in range(3)})
  rest = np.transpose(colors[:, 1:, :], (0, 2, 1)).reshape(n, -1)  # channel-major
  fields.update({f"f_rest_{k}": rest[:, k] for k in range(rest.shape[1])})
  clipped = np.clip(opacities, _EPS, 1.0 - _EPS)
  fields["opacity"] = np.log(clipped) - np.log1p(-clipped)
  log_scales = np.log(np.maximum(scales, 1e-30))
  fields.update({f"scale_{k}": log_scales[:, k] for k in range(3)})
  unit_quats = quats / np.linalg.norm(quats, axis=-1, keepdims=True)
  fields.update({f"rot_{k}": unit_quats[:, k] for k in range(4)})
  return {name: value.astype(np.float32) for name, value in fields.items()}


def write_ply(path: str | os.PathLike, means, scales, quats_wxyz, opacities, colors) -> None:
  """Write Gaussians (activated values, see `gaussians_to_ply_fields`) to a 3DGS .ply file."""
  fields = gaussians_to_ply_fields(means, scales, quats_wxyz, opacities, colors)
  n = len(fields["x"])
  header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
  header += [f"property float {name}" for name in fields]
  header.append("end_header")
  records = np.empty(n, dtype=[(name, "<f4") for name in fields])
  for name, value in fields.items():
    records[name] = value
  with open(path, "wb") as handle:
    handle.write(("\n".join(header) + "\n").encode("ascii"))
    handle.write(records.tobytes())


def read_ply_fields(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """All `vertex` properties of a binary little-endian .ply, name → [N] array (numpy)."""
  with open(path, "rb") as handle:
    if handle.readline().strip() != b"ply":
      raise ValueError(f"{path}: not a PLY file")
    elements, current, fmt = [], None, None
    while True:
      line = handle.readline()
      if not line:
        raise ValueError(f"{path}: header has no end_header")
      words = line.decode("ascii").split()
      if not words or words[0] in ("comment", "obj_info"):
        continue
      if words[0] == "end_header":
        break
      if words[0] == "format":
        fmt = words[1]
      elif words[0] == "element":
        current = (words[1], int(words[2]), [])
        elements.append(current)
      elif words[0] == "property":
        if words[1] == "list" or current is None:
          raise ValueError(f"{path}: list properties are not supported")
        current[2].append((words[2], "<" + _PLY_TYPES[words[1]]))
    if fmt != "binary_little_endian":
      raise ValueError(f"{path}: only binary_little_endian PLY is supported, got {fmt}")
    for name, count, properties in elements:
      records = np.frombuffer(handle.read(count * np.dtype(properties).itemsize),
                              dtype=properties, count=count)
      if name == "vertex":
        return {prop: np.asarray(records[prop]) for prop, _ in properties}
  raise ValueError(f"{path}: no vertex element")


def read_ply(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Read a 3DGS .ply back to activated Gaussians (numpy float32).

  Returns means [N, 3], scales [N, 3] (exp), quats_wxyz [N, 4] (normalised), opacities [N]
  (sigmoid), colors [N, 3] RGB when the file holds SH degree 0, else [N, M, 3] SH coefficients.
  """
  fields = read_ply_fields(path)
  stack = lambda names: np.stack([fields[name] for name in names], axis=-1).astype(np.float64)
  means = stack(["x", "y", "z"])
  dc = stack([f"f_dc_{c}" for c in range(3)])
  num_rest = len([name for name in fields if name.startswith("f_rest_")])
  if num_rest:
    rest = stack([f"f_rest_{k}" for k in range(num_rest)]).reshape(len(means), 3, -1)
    colors = np.concatenate([dc[:, None, :], np.transpose(rest, (0, 2, 1))], axis=1)
  else:
    colors = SH_C0 * dc + 0.5
  quats = stack([f"rot_{k}" for k in range(4)])
  return {
      "means": means.astype(np.float32),
      "scales": np.exp(stack([f"scale_{k}" for k in range(3)])).astype(np.float32),
      "quats_wxyz": (quats / np.linalg.norm(quats, axis=-1, keepdims=True)).astype(np.float32),
      "opacities": (1.0 / (1.0 + np.exp(-fields["opacity"].astype(np.float64)))).astype(
          np.float32),
      "colors": colors.astype(np.float32),
  }
