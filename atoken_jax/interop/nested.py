"""Nested-dict parameter trees <-> flat names, shared by the weight importers."""
from __future__ import annotations

from typing import Any, Iterator, Mapping


def walk(tree: Mapping, prefix: tuple = ()) -> Iterator[tuple[tuple, Any]]:
  """Yields (path tuple, leaf) for every leaf of a nested mapping."""
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from walk(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def flatten(tree: Mapping) -> dict[str, Any]:
  """{"a": {"b": x}} -> {"a/b": x}."""
  return {"/".join(map(str, path)): v for path, v in walk(tree)}


def unflatten(flat: Mapping[str, Any]) -> dict:
  """{"a/b": x} -> {"a": {"b": x}}."""
  tree: dict = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree
