"""Experiment configs by file or by name, the same for every command line.

  --config=experiments/stage1_image.py:tiny    a file (absolute, or relative to the cwd)
  --config=stage1_image:tiny                   a bundled experiment, by module name

A name is looked up in the installed `experiments` package, so it works from any directory
with a wheel install as well as in the checkout. `resolve` turns a name into its file's path;
everything else (a file, a path that does not exist) is passed on unchanged for the config
loader to read or report.
"""
from __future__ import annotations

import importlib.util
import os
import re

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
  is not also a file in the cwd; any other spec is returned unchanged.

  Raises ValueError (one line, naming the choices) for a bare name that is neither."""
  path, sep, arg = spec.partition(":")
  if os.path.exists(path) or not _NAME.fullmatch(path):
    return spec
  configs = bundled()
  if path not in configs:
    raise ValueError(f"--config={spec}: {path!r} is neither a file nor a bundled experiment "
                     f"(one of: {', '.join(sorted(configs)) or 'none installed'})")
  return configs[path] + sep + arg


def resolve_argv(argv: list[str], flag: str = "config") -> list[str]:
  """argv with the value of `--FLAG=V` / `--FLAG V` passed through `resolve`."""
  out, expect_value = [], False
  for word in argv:
    if expect_value:
      word, expect_value = resolve(word), False
    elif word == f"--{flag}":
      expect_value = True
    elif word.startswith(f"--{flag}="):
      word = f"--{flag}=" + resolve(word[len(flag) + 3:])
    out.append(word)
  return out
