"""One config system for every command: `ml_collections` config files, by path or by name.

    --config=experiments/stage1_image.py:tiny   a config file, and the argument of its get_config
    --config=stage1_image:tiny                  the same file by name (the installed `experiments`)
    --config.optim.lr=1e-3                      overrides, parsed by ml_collections' config_flags

`atoken train`, `sweep`, `gs train` and `eval` all read their config through `parse`, so the
same words mean the same thing everywhere; each command parses its own other flags.
"""
from __future__ import annotations

import os
from typing import Sequence

import ml_collections

from atoken_jax import cli_errors


def resolve(spec: str) -> str:
  """"NAME[:arg]" or "PATH.py[:arg]" -> "ABSOLUTE_PATH.py[:arg]".

  A bare name (no ".py", no directory) is a module of the `experiments` package, wherever it is
  installed (a checkout or a wheel); anything else is a path."""
  path, sep, arg = spec.partition(":")
  if not path.endswith(".py") and os.sep not in path and "/" not in path:
    import experiments  # pylint: disable=import-outside-toplevel
    named = os.path.join(os.path.dirname(os.path.abspath(experiments.__file__)), path + ".py")
    if not os.path.isfile(named):
      names = sorted(f[:-3] for f in os.listdir(os.path.dirname(named))
                     if f.endswith(".py") and not f.startswith("_"))
      raise cli_errors.UsageError(f"no config named {path!r}; named configs: "
                                  f"{', '.join(names)} (or give a path to a config file)")
    path = named
  elif not os.path.isfile(path):
    raise cli_errors.UsageError(f"config file not found: {path}")
  return os.path.abspath(path) + sep + arg


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
  cli_errors.absl_flags_parser(fv)(args)
  return fv.config


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
