"""Convert a parameter tree between per-layer (`blocks_0`, `blocks_1`, ...) and scanned
(`blocks` with a leading layer axis) layouts, so interop code handles one layout only."""
from __future__ import annotations

import re
from typing import Any

import numpy as np

_BLOCK = re.compile(r"^blocks_(\d+)$")


def _is_block_container(d: dict) -> bool:
  return bool(d) and all(_BLOCK.match(k) for k in d)


def unstack_layers(tree: Any) -> Any:
  """Every `transformer/blocks` (stacked) -> `transformer/blocks_{i}`; other nodes unchanged."""
  if not isinstance(tree, dict):
    return tree
  out = {}
  for k, v in tree.items():
    if k == "blocks" and isinstance(v, dict):
      leaves = _leaves(v)
      depth = leaves[0].shape[0]
      for i in range(depth):
        out[f"blocks_{i}"] = _map(lambda a, i=i: np.asarray(a)[i], v)
    else:
      out[k] = unstack_layers(v)
  return out


def stack_layers(tree: Any) -> Any:
  """Every dict of `blocks_{i}` children -> one `blocks` child with a leading layer axis."""
  if not isinstance(tree, dict):
    return tree
  if _is_block_container(tree):
    n = len(tree)
    layers = [tree[f"blocks_{i}"] for i in range(n)]
    return {"blocks": _map_many(lambda *xs: np.stack([np.asarray(x) for x in xs]), layers)}
  return {k: stack_layers(v) for k, v in tree.items()}


def is_stacked(tree: Any) -> bool:
  if not isinstance(tree, dict):
    return False
  return "blocks" in tree or any(is_stacked(v) for v in tree.values())


def _leaves(d):
  if isinstance(d, dict):
    return [leaf for v in d.values() for leaf in _leaves(v)]
  return [d]


def _map(fn, d):
  return {k: _map(fn, v) for k, v in d.items()} if isinstance(d, dict) else fn(d)


def _map_many(fn, ds):
  if isinstance(ds[0], dict):
    return {k: _map_many(fn, [d[k] for d in ds]) for k in ds[0]}
  return fn(*ds)
