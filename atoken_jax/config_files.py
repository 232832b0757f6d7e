"""One config system for every command: `ml_collections` config files, by path or by name.

    --config=experiments/stage1_image.py:tiny   a config file, and the argument of its get_config
    --config=stage1_image:tiny                  a bundled experiment by name (the installed
                                                `experiments` package: works from a wheel)
    --config.optim.lr=1e-3                      overrides, parsed by ml_collections' config_flags

`atoken train`, `sweep`, `gs train` and `eval` all read their config through `parse`, so the
same words mean the same thing everywhere; each command parses its own other flags.
"""
from __future__ import annotations

import importlib.util
import os
import re
from typing import Sequence

import ml_collections

from atoken_jax import cli_errors


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFINES_CONFIG = re.compile(r"^def get_config\(", re.MULTILINE)


def _experiment_dirs() -> list[str]:
  spec = importlib.util.find_spec("experiments")
  return list(spec.submodule_search_locations or []) if spec is not None else []


def bundled() -> dict[str, str]:
  """{name: file} of the installed experiment configs (modules that define `get_config`)."""
  out: dict[str, str] = {}
  for folder in _experiment_dirs():
    for entry in sorted(os.listdir(folder)):
      name, ext = os.path.splitext(entry)
      path = os.path.join(folder, entry)
      if ext != ".py" or name.startswith("_") or name in out:
        continue
      with open(path, encoding="utf-8") as f:
        if _DEFINES_CONFIG.search(f.read()):
          out[name] = path
  return out


def resolve(spec: str) -> str:
  """"NAME[:arg]" -> "/path/to/experiments/NAME.py[:arg]" for a bundled experiment NAME that
  is not also a file in the cwd; any other spec is returned unchanged (the loader reports a
  missing file).

  Raises UsageError (one line, naming the choices) for a bare name that is neither."""
  path, sep, arg = spec.partition(":")
  if os.path.exists(path) or not _NAME.fullmatch(path):
    return spec
  configs = bundled()
  if path not in configs:
    raise cli_errors.UsageError(
        f"--config={spec}: {path!r} is neither a file nor a bundled experiment "
        f"(one of: {', '.join(sorted(configs)) or 'none installed'})")
  return configs[path] + sep + arg


def split_argv(argv: Sequence[str]) -> tuple[str | None, list[str], list[str]]:
  """argv -> (the --config spec or None, the --config.x=v overrides, every other argument)."""
  spec, overrides, rest = None, [], []
  argv = list(argv)
  i = 0
  while i < len(argv):
    a = argv[i]
    if a.startswith("--config."):
      if "=" not in a and i + 1 < len(argv):  # --config.a.b VALUE
        a, i = f"{a}={argv[i + 1]}", i + 1
      overrides.append(a)
    elif a.startswith("--config="):
      spec = a.split("=", 1)[1]
    elif a == "--config" and i + 1 < len(argv):
      spec, i = argv[i + 1], i + 1
    else:
      rest.append(a)
    i += 1
  return spec, overrides, rest


def load(spec: str, overrides: Sequence[str] = (), lock: bool = True
         ) -> ml_collections.ConfigDict:
  """The config `spec` names, with `--config.x=v` overrides applied exactly as config_flags
  applies them (an unknown key or a value of the wrong type: a one-line `UsageError`)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  args = ["atoken", f"--config={resolve(spec)}", *overrides]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config file[:arg]", flag_values=fv,
                                  lock_config=lock, sys_argv=args)
  try:
    cli_errors.absl_flags_parser(fv)(args)
  except cli_errors.UsageError:
    hint = _data_spelling(spec, overrides)
    if hint is None:
      raise
    raise cli_errors.UsageError(hint) from None
  return fv.config


def _has(node, parts: Sequence[str]) -> bool:
  for part in parts:
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False
    node = node[part]
  return True


def _leaves(node: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  out = []
  for k, v in node.items():
    out += _leaves(v, f"{prefix}{k}.") if isinstance(v, ml_collections.ConfigDict) else [
        prefix + k]
  return out


def _data_spelling(spec: str, overrides: Sequence[str]) -> str | None:
  """The one line for an override a training config refuses because its data layout keeps the
  field elsewhere: stage-wide fields live in `config.data`, each task's own (batch shape,
  sources, differences) in `config.tasks.<task>.data` (experiments/common.py). None otherwise."""
  try:
    cfg = load(spec, (), lock=False)
  except Exception:  # noqa: BLE001 - the original error is the one to report
    return None
  if not isinstance(cfg, ml_collections.ConfigDict) or "data" not in cfg or "tasks" not in cfg:
    return None
  for override in overrides:
    key, _, value = override[len("--config."):].partition("=")
    parts = key.split(".")
    if parts[0] == "tasks" and len(parts) > 3 and parts[2] == "data" and _has(cfg, parts[:3]):
      field, own = parts[3:], cfg.tasks[parts[1]].data
      if not _has(own, field) and _has(cfg.data, field):
        name = ".".join(field)
        return (f"--config.{key}: task {parts[1]}'s data sets only {', '.join(_leaves(own))}; "
                f"{name} is stage-wide: --config.data.{name}={value} (every task), or give "
                f"the task its own value in a config file")
    elif parts[0] == "data" and len(parts) > 1 and not _has(cfg.data, parts[1:]):
      name = ".".join(parts[1:])
      owners = [n for n, t in cfg.tasks.items() if _has(t, ["data", *parts[1:]])]
      if owners:
        return (f"--config.{key}: {name} is set per task: --config.tasks.{owners[0]}.data."
                f"{name}={value} (tasks: {', '.join(owners)})")
  return None


def parse(argv: Sequence[str], required: bool = True
          ) -> tuple[ml_collections.ConfigDict | None, list[str]]:
  """A command's argv -> (its config with overrides, the arguments left for the command)."""
  spec, overrides, rest = split_argv(argv)
  if spec is None:
    if required:
      raise cli_errors.UsageError("--config=FILE.py[:arg] or --config=NAME[:arg] is required")
    if overrides:
      raise cli_errors.UsageError(f"{overrides[0]} given without --config")
    return None, rest
  return load(spec, overrides), rest
