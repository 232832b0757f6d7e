"""Resuming a workdir: the newest readable checkpoint, only if it is the run this config asks for.

A checkpoint is resumed only when it holds the parameters this config describes. Two checks,
before any array is read:

  * the config: fields that say WHAT is trained must equal the checkpoint's - the model
    architecture (`model.*`, the top-level `preset`) and, for Gaussian-decoder runs, `gs.*`,
    `tokenizer.*`, `mode` and `features`. Fields that only say how the same function is computed
    (EXECUTION_ONLY: remat, attention chunking, the decoder's KV cache) may change.
  * the layout: every leaf of the saved state (parameters, optimiser moments, EMA) must have
    the path, shape and dtype this config's state has.

Everything else - the schedule and `total_steps`, the optimiser's and the loss's
hyper-parameters, the data, logging, evaluation, mesh and retention - says how training
continues and may change; each such change is logged in one line. `init.*` is only read by a
fresh start and is ignored on resume.

A refused resume raises `ResumeRefused` (one line naming the fields) before anything is written
or deleted. A deliberate change of the architecture goes through one of two named paths:
  * a new workdir with `--config.init.previous_stage=OLD_WORKDIR` (train/stages.py adapts
    the parameters, e.g. latent 32 -> 48) - the only path when the layout changes;
  * `--allow_config_change=model.dtype,...` on `atoken train` / `atoken gs train`: resume in
    place although the named fields differ (the layout must still match).
Fields present on one side only (a config key added or removed since the checkpoint was
written) are not compared.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Iterable, Mapping

import ml_collections

from atoken_jax.train import checkpoint as ckpt_lib

log = logging.getLogger("atoken.train")

IDENTITY_PREFIXES = ("preset", "model.", "gs.", "tokenizer.", "mode", "features")
EXECUTION_ONLY = ("model.remat", "model.attention_impl", "model.attention_kv_chunk",
                  "model.decoder_kv_cache_frames",
                  "gs.remat", "gs.attention", "tokenizer.remat")
IGNORED_ON_RESUME = ("init.",)


class ResumeRefused(ValueError):
  """The workdir's checkpoint is not the run this config describes."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _is_identity(key: str) -> bool:
  if key in EXECUTION_ONLY:
    return False
  return any(key == p or (p.endswith(".") and key.startswith(p)) for p in IDENTITY_PREFIXES)


def _norm(v: Any) -> Any:
  """JSON round trip: tuples and lists compare equal, as the saved config has them."""
  return json.loads(json.dumps(v, default=str))


def _with_full_data(tree: Mapping[str, Any]) -> dict[str, Any]:
  """A training config with each task's full data config in place of the stage-wide
  `data` + sparse task overrides, so that configs saved before and after `config.data` existed
  compare field by field. Other configs (Gaussian decoder, no per-task data) pass unchanged."""
  tree = dict(tree)
  tasks = tree.get("tasks")
  if "gs" in tree or not isinstance(tasks, Mapping) or not any(
      isinstance(t, Mapping) and "data" in t for t in tasks.values()):
    return tree
  from data_pipelines import config as data_config  # pylint: disable=import-outside-toplevel
  cfg = ml_collections.ConfigDict(_norm(tree))
  try:
    full = {n: data_config.resolve_task(cfg, n).to_dict() for n in cfg.tasks
            if data_config.has_data(cfg, n)}
  except ValueError:  # an unresolvable config: compared as it is
    return tree
  tree.pop("data", None)
  tree["tasks"] = {n: {**dict(t), **({"data": full[n]} if n in full else {})}
                   for n, t in tasks.items()}
  return tree


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]
                   ) -> tuple[dict[str, tuple], dict[str, tuple]]:
  """-> ({identity field: (saved, now)}, {other field: (saved, now)}) for fields on both sides."""
  a, b = flatten(_with_full_data(saved)), flatten(_norm(_with_full_data(current)))
  identity, other = {}, {}
  for key in sorted(set(a) & set(b)):
    if _norm(a[key]) == b[key] or key.startswith(IGNORED_ON_RESUME):
      continue
    (identity if _is_identity(key) else other)[key] = (a[key], b[key])
  return identity, other


def layout_changes(saved_layout: Any, abstract_state: Any) -> list[str]:
  """Leaves whose path, shape or dtype differ between a checkpoint and this config's state."""
  a, b = ckpt_lib.flat_layout(saved_layout), ckpt_lib.flat_layout(abstract_state)
  out = [f"{k}: only in the checkpoint {a[k][0]}" for k in sorted(set(a) - set(b))]
  out += [f"{k}: not in the checkpoint" for k in sorted(set(b) - set(a))]
  out += [f"{k}: checkpoint {a[k][0]} {a[k][1]}, config {b[k][0]} {b[k][1]}"
          for k in sorted(set(a) & set(b)) if a[k] != b[k]]
  return out


def _fmt(changes: Mapping[str, tuple]) -> str:
  return ", ".join(f"{k} (checkpoint {a!r}, config {b!r})" for k, (a, b) in changes.items())


def check(step: int, directory: str, saved_config: Mapping[str, Any], saved_layout: Any,
          config: ml_collections.ConfigDict, abstract_state: Any,
          allow: Iterable[str] = ()) -> None:
  """Raises ResumeRefused if the checkpoint at `step` is not this config's run (module doc)."""
  current = json.loads(config.to_json_best_effort())
  identity, other = config_changes(saved_config, current)
  allow = set(allow)
  allowed = {k: v for k, v in identity.items() if k in allow}
  refused = {k: v for k, v in identity.items() if k not in allow}
  layout = sorted(layout_changes(saved_layout, abstract_state),
                  key=lambda line: not line.startswith("params."))  # parameters first
  where = f"resuming {directory} at step {step}"
  if layout:
    named = f" - the config changes {_fmt(identity)}" if identity else ""
    more = f" (+{len(layout) - 2} more)" if len(layout) > 2 else ""
    raise ResumeRefused(
        f"{where}: the parameter layout differs{named}; leaves: {'; '.join(layout[:2])}{more}. "
        f"Nothing was changed. To train the change, start a new workdir with "
        f"--config.init.previous_stage={directory.removesuffix('/checkpoints')}")
  if refused:
    raise ResumeRefused(
        f"{where}: the config changes {_fmt(refused)}, which define what is trained. Nothing "
        "was changed. Resume with the checkpoint's values, start a new workdir with "
        "--config.init.previous_stage=..., or pass --allow_config_change="
        f"{','.join(refused)} to resume anyway")
  if allowed:
    log.warning("%s with changed %s (allowed by --allow_config_change)", where, _fmt(allowed))
  if other:
    log.info("%s with changed %s", where, _fmt(other))


def restore_latest(checkpointer: ckpt_lib.Checkpointer, abstract_state: Any,
                   iterators: Mapping[str, Any] | None, config: ml_collections.ConfigDict,
                   allow: Iterable[str] = ()) -> tuple[int, Any] | None:
  """(step, state) of the newest readable checkpoint, after `check`; None when there is none.

  Unreadable checkpoints are skipped (said in one log line); a refused or unreadable-only
  workdir raises - a run never falls back to a fresh start over checkpoints it cannot use."""
  if not checkpointer.steps():
    return None

  def attempt(step):
    check(step, checkpointer.directory, checkpointer.read_config(step),
          checkpointer.read_layout(step), config, abstract_state, allow)
    try:
      return checkpointer.restore(step, abstract_state, iterators)
    except ckpt_lib.DataStateMismatch as e:
      raise ResumeRefused(f"resuming {checkpointer.directory} at step {step}: {e}; a new task "
                          "set needs a new workdir with --config.init.previous_stage") from None

  try:
    step, state, skipped = checkpointer.newest(attempt)
  except ckpt_lib.UnreadableCheckpoint as e:
    raise ResumeRefused(f"{e}. Nothing was changed; move the unreadable steps aside to start "
                        "afresh") from None
  checkpointer.adopt_lineage_of(step)
  if skipped:
    log.warning("resumed from %s at step %d, skipping %s", checkpointer.directory, step,
                ckpt_lib.describe_skipped(skipped))
  else:
    log.info("resumed from %s at step %d", checkpointer.directory, step)
  return step, state
