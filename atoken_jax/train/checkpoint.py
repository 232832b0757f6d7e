"""Orbax checkpoints of the train state, the data iterators' state and the resolved config.

Layout: WORKDIR/checkpoints/<step>/{state, data, config}. Saves are asynchronous; the last
`keep` checkpoints are kept plus every `keep_every`-th step. Restore targets carry the current
mesh's shardings, so a checkpoint written on one mesh or device count restores onto another.
A latest checkpoint that fails to restore (truncated, corrupt) is skipped with a warning in
favour of the previous one.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import grain
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


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
      raise ValueError(f"checkpoint has no data state for task(s) {missing}")
    for k, it in self.iterators.items():
      it.set_state(states[k])

  def start_prefetch(self) -> None:
    for it in self.iterators.values():
      if hasattr(it, "start_prefetch"):
        it.start_prefetch()


class Checkpointer:
  """Save / restore / list checkpoints under `directory`."""

  def __init__(self, directory: str, keep: int = 3, keep_every: int | None = None,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, keep_period=keep_every, enable_async_checkpointing=async_save,
        create=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data", "config"),
        item_handlers={"data": grain.checkpoint.CheckpointHandler()})

  def save(self, step: int, state: Any, iterators: Mapping[str, Any] | None,
           config: Mapping[str, Any], force: bool = False) -> bool:
    items = dict(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(dict(config)))
    if iterators:
      items["data"] = grain.checkpoint.CheckpointSave(IteratorsState(iterators))
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore(self, abstract_state: Any, iterators: Mapping[str, Any] | None = None,
              step: int | None = None) -> tuple[int, Any, dict] | None:
    """Restores `step` (default: the newest that restores cleanly) onto the shardings of
    `abstract_state` (a tree of jax.ShapeDtypeStruct with .sharding). -> (step, state, config)
    or None when there is no checkpoint."""
    candidates = [step] if step is not None else sorted(self.steps(), reverse=True)
    for s in candidates:
      try:
        items = dict(state=ocp.args.StandardRestore(abstract_state),
                     config=ocp.args.JsonRestore())
        if iterators and _has_item(self.directory, s, "data"):
          items["data"] = grain.checkpoint.CheckpointRestore(IteratorsState(iterators))
        out = self.manager.restore(s, args=ocp.args.Composite(**items))
        return s, out["state"], dict(out["config"] or {})
      except Exception as e:  # pylint: disable=broad-except
        if step is not None:
          raise
        log.warning("checkpoint at step %d could not be restored (%s: %s); trying the "
                    "previous one", s, type(e).__name__, str(e).splitlines()[0][:200])
    return None

  def restore_config(self, step: int | None = None) -> dict:
    step = self.manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint under {self.directory}")
    out = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return dict(out["config"])

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _has_item(directory: str, step: int, item: str) -> bool:
  return os.path.isdir(os.path.join(directory, str(step), item))


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_state, shardings)
