"""Orbax checkpoints of the train state, the data iterators' state, the resolved config and the
lineage that wrote them.

Layout: WORKDIR/checkpoints/<step>/{state, data, config, lineage}. Saves are asynchronous.
Restore targets carry the current mesh's shardings, so a checkpoint written on one mesh or
device count restores onto another.

Retention is ours, not Orbax's: each checkpoint records the id of the lineage that wrote it (a
run and every resume of it), and only this lineage's checkpoints are ever deleted - the newest
`keep` of them are kept, plus every step that is a multiple of `keep_every`. Checkpoints copied
in from another run, or written before lineages were recorded, are never deleted.

Reading a step that is truncated, garbage or half-written raises `UnreadableCheckpoint`;
`newest()` walks back past such steps (see train/resume.py and train/restore.py).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from typing import Any, Callable, Mapping, TypeVar

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)
T = TypeVar("T")


class UnreadableCheckpoint(Exception):
  """A checkpoint step that cannot be read (truncated, corrupt, partly written)."""


class DataStateMismatch(ValueError):
  """The checkpoint's data state does not cover this run's tasks."""


class IteratorsState:
  """Adapts {task: iterator with get_state()/set_state()} to Grain's checkpoint handler, which
  writes one JSON file per process."""

  def __init__(self, iterators: Mapping[str, Any]):
    self.iterators = dict(iterators)

  def get_state(self) -> bytes:
    return json.dumps({k: it.get_state() for k, it in self.iterators.items()}).encode()

  def set_state(self, state: bytes) -> None:
    states = json.loads(state.decode())
    missing = sorted(set(self.iterators) - set(states))
    if missing:
      raise DataStateMismatch(f"checkpoint has no data state for task(s) {missing} (it has "
                              f"{sorted(states)})")
    for k, it in self.iterators.items():
      it.set_state(states[k])

  def start_prefetch(self) -> None:
    for it in self.iterators.values():
      if hasattr(it, "start_prefetch"):
        it.start_prefetch()


def _reason(e: BaseException) -> str:
  first = (str(e).splitlines() or [""])[0]
  return f"{type(e).__name__}: {first[:160]}"


def path_str(path) -> str:
  """A pytree key path -> "params.model.proj.kernel" (dict keys, attributes and indices)."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return ".".join(parts)


def flat_layout(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """{leaf path: (shape, dtype)} of a tree of arrays, ShapeDtypeStructs or Orbax metadata."""
  return {path_str(p): (tuple(v.shape), str(np.dtype(v.dtype)))
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


class Checkpointer:
  """Save / read / restore / list checkpoints under `directory`. `read_only` opens an existing
  directory without creating or deleting anything."""

  def __init__(self, directory: str, keep: int = 3, keep_every: int | None = None,
               async_save: bool = True, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    if read_only and not os.path.isdir(self.directory):
      raise FileNotFoundError(f"no checkpoints under {os.path.dirname(self.directory)} "
                              f"({self.directory} does not exist)")
    self.keep, self.keep_every, self.read_only = keep, keep_every or None, read_only
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None, enable_async_checkpointing=async_save and not read_only,
        create=not read_only)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data", "config", "lineage"),
        item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                       "config": ocp.JsonCheckpointHandler(),
                       "lineage": ocp.JsonCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()})
    self.lineage = None if read_only else _new_lineage_id()
    self._owners: dict[int, str | None] = {}

  # ------------------------------------------------------------------ save + retention
  def save(self, step: int, state: Any, iterators: Mapping[str, Any] | None,
           config: Mapping[str, Any], force: bool = False) -> bool:
    self.manager.wait_until_finished()
    self._retain()
    items = dict(state=ocp.args.PyTreeSave(state), config=ocp.args.JsonSave(dict(config)),
                 lineage=ocp.args.JsonSave({"id": self.lineage}))
    if iterators:
      items["data"] = grain.checkpoint.CheckpointSave(IteratorsState(iterators))
    saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    if saved:
      self._owners[step] = self.lineage
    return saved

  def _retain(self) -> None:
    """Deletes this lineage's finished checkpoints beyond `keep` (and off `keep_every`)."""
    own = sorted((s for s in self.steps() if self.owner(s) == self.lineage), reverse=True)
    for s in own[self.keep:]:
      if self.keep_every and s % self.keep_every == 0:
        continue
      self.manager.delete(s)
      self._owners.pop(s, None)

  def owner(self, step: int) -> str | None:
    """The lineage id recorded in `step` (None: unrecorded or unreadable - never deleted)."""
    if step not in self._owners:
      try:
        self._owners[step] = self._read(step, "lineage", ocp.args.JsonRestore())["id"]
      except Exception:  # pylint: disable=broad-except
        self._owners[step] = None
    return self._owners[step]

  def adopt_lineage_of(self, step: int) -> None:
    """A resume continues the lineage of the checkpoint it restored (if it recorded one)."""
    self.lineage = self.owner(step) or self.lineage

  def wait(self) -> None:
    self.manager.wait_until_finished()
    if not self.read_only:
      self._retain()

  def close(self) -> None:
    self.wait()
    self.manager.close()

  # ------------------------------------------------------------------ reading
  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def _read(self, step: int, item: str, args) -> Any:
    if not _has_item(self.directory, step, item):
      raise UnreadableCheckpoint(f"step {step} has no {item!r} item")
    try:
      return self.manager.restore(step, args=ocp.args.Composite(**{item: args}))[item]
    except Exception as e:  # pylint: disable=broad-except
      raise UnreadableCheckpoint(f"its {item} cannot be read ({_reason(e)})") from e

  def read_config(self, step: int) -> dict:
    config = self._read(step, "config", ocp.args.JsonRestore())
    if not isinstance(config, dict):
      raise UnreadableCheckpoint(f"its config is a {type(config).__name__}, not a mapping")
    return config

  def read_layout(self, step: int) -> Any:
    """The saved state's tree of array metadata (shape, dtype), read without the arrays."""
    try:
      meta = self.manager.item_metadata(step)["state"]
    except Exception as e:  # pylint: disable=broad-except
      raise UnreadableCheckpoint(f"its state metadata cannot be read ({_reason(e)})") from e
    if meta is None:
      raise UnreadableCheckpoint("it has no state metadata")
    return meta

  def restore(self, step: int, abstract_state: Any,
              iterators: Mapping[str, Any] | None = None) -> Any:
    """The whole state at `step` onto the shardings of `abstract_state` (a tree of
    jax.ShapeDtypeStruct with .sharding), and the iterators' positions."""
    items = dict(state=ocp.args.PyTreeRestore(
        item=abstract_state, restore_args=ocp.checkpoint_utils.construct_restore_args(
            abstract_state)))
    if iterators and _has_item(self.directory, step, "data"):
      items["data"] = grain.checkpoint.CheckpointRestore(IteratorsState(iterators))
    try:
      with quiet_logs("asyncio"):
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]
    except DataStateMismatch:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise UnreadableCheckpoint(f"its state cannot be read ({_reason(e)})") from e

  def restore_subtrees(self, step: int, names: tuple[str, ...], layout: Any,
                       shardings: Mapping[str, Any] | None = None) -> dict:
    """Only the named top-level parts of the saved state (e.g. ("params", "step")), as numpy
    arrays; a leaf whose path is also in `shardings[name]` (a tree of jax.sharding.Sharding)
    is restored onto that sharding instead."""
    item, args = {}, {}
    for name in names:
      sub = layout[name]
      where = {}
      if shardings and name in shardings:
        where = {path_str(p): s for p, s in jax.tree_util.tree_flatten_with_path(
            shardings[name], is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))[0]}
      item[name] = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), sub)
      args[name] = jax.tree_util.tree_map_with_path(
          lambda p, m: (ocp.ArrayRestoreArgs(sharding=where[path_str(p)], global_shape=m.shape,
                                             dtype=m.dtype) if path_str(p) in where
                        else ocp.RestoreArgs(restore_type=np.ndarray)), sub)
    try:
      with quiet_logs("asyncio"):
        return self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=item, restore_args=args, partial_restore=True)))["state"]
    except Exception as e:  # pylint: disable=broad-except
      raise UnreadableCheckpoint(f"its state cannot be read ({_reason(e)})") from e

  def newest(self, attempt: Callable[[int], T], step: int | None = None
             ) -> tuple[int, T, list[tuple[int, str]]]:
    """`attempt(step)` on the newest step (or exactly `step`) that it can read, walking back past
    unreadable ones. -> (step, its result, [(skipped step, why)]). Anything `attempt` raises
    other than UnreadableCheckpoint propagates at once (no fallback)."""
    candidates = [step] if step is not None else sorted(self.steps(), reverse=True)
    if step is not None and step not in self.steps():
      raise FileNotFoundError(f"{self.directory} has no checkpoint at step {step} (it has "
                              f"{self.steps()})")
    skipped = []
    for s in candidates:
      try:
        return s, attempt(s), skipped
      except UnreadableCheckpoint as e:
        skipped.append((s, str(e)))
    if not candidates:
      raise FileNotFoundError(f"no checkpoint under {self.directory}")
    raise UnreadableCheckpoint(f"no checkpoint under {self.directory} can be read: "
                               + describe_skipped(skipped))


def describe_skipped(skipped: list[tuple[int, str]]) -> str:
  return "; ".join(f"step {s}: {why}" for s, why in skipped)


def _has_item(directory: str, step: int, item: str) -> bool:
  return os.path.isdir(os.path.join(directory, str(step), item))


def _new_lineage_id() -> str:
  """A fresh random id, the same on every process."""
  raw = np.frombuffer(uuid.uuid4().bytes, np.uint8)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    raw = np.asarray(multihost_utils.broadcast_one_to_all(raw))
  return bytes(raw.astype(np.uint8)).hex()


@contextlib.contextmanager
def quiet_logs(*names: str):
  """Silences the named loggers for the duration. Orbax logs each unreadable file it meets
  (absl), and a failed read of a truncated TensorStore file can make asyncio log `Event loop is
  closed` for every pending array; callers report each skipped step once themselves."""
  loggers = [logging.getLogger(n) for n in names]
  levels = [lg.level for lg in loggers]
  for lg in loggers:
    lg.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    for lg, level in zip(loggers, levels):
      lg.setLevel(level)


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_state, shardings)
