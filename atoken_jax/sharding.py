"""Device mesh and the one table of logical-axis rules.

Parameters and activations are annotated with logical axis names in the model; this table maps
them onto the mesh axes `data`, `fsdp` and `tensor`:
  - the batch is split over data x fsdp;
  - parameters are split over fsdp on their `embed` dimension (ZeRO-3 style), and over tensor on
    attention heads and the MLP's hidden dimension (Megatron style);
  - everything else is replicated.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    # parameters
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("qkv", None),
    ("patch", None),
    ("pos", None),
    ("latent", None),
    ("norm", None),
    ("layers", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh; one size may be -1 (= the remaining devices)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} "
                     f"tensor={tensor}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices cannot be split into data={data} fsdp={fsdp} "
                       f"tensor={tensor}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs "
                     f"{int(np.prod(sizes))} devices, have {len(devices)}")
  grid = np.asarray(devices, dtype=object).reshape(sizes)
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_to_sharding(logical_tree, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
  """A tree of logical PartitionSpecs (e.g. `nn.get_partition_spec(boxed_params)`) ->
  a tree of NamedShardings on `mesh`."""
  specs = nn.logical_to_mesh(logical_tree, rules)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (batch) dim split over data x fsdp; the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def to_host(tree):
  """Any pytree of jax.Arrays -> the same tree of numpy arrays, on every process.

  The one way host code reads a possibly sharded array. `jax.device_get` refuses an array
  whose shards live on other processes' devices (a batch- or fsdp-sharded array on a pod);
  such arrays are all-gathered instead. Every process must call this for the same arrays
  (it is a collective when any array spans processes)."""
  leaves, treedef = jax.tree.flatten(tree)
  spans = [isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated)
           for x in leaves]
  if any(spans):
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    gathered = multihost_utils.process_allgather([x for x, g in zip(leaves, spans) if g],
                                                 tiled=True)
    it = iter(gathered)
    leaves = [next(it) if g else x for x, g in zip(leaves, spans)]
  return jax.tree.unflatten(treedef, [np.asarray(jax.device_get(x)) for x in leaves])
