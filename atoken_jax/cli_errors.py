"""The `atoken` command line's error boundary: one line for every refusal.

Every `atoken <cmd>` runs inside `run_command`. An exception that means "this command line or
this input is wrong" is printed as one line on stderr,

  atoken <cmd>: error: <message naming the file, the key or the step>

with exit status 2 for a wrong command line (unknown flag or config key, missing config file,
bad flag value, missing argument) and 1 for a refused input or environment (missing, unreadable
or undecodable file, a file where a folder was expected, a full disk, a refused pickle, out of
device memory, a NaN loss). Any other exception is a bug: one line naming its type, exit
status 3, and a hint to rerun with ATOKEN_DEBUG=1 (or `atoken --debug <cmd> ...`), which lets
every exception, expected or not, propagate with its traceback.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import subprocess
import sys
from typing import Callable, Sequence

USAGE_EXIT, REFUSED_EXIT, INTERNAL_EXIT = 2, 1, 3
# Refusals of libraries or modules not imported here (matched by name to keep start-up light):
# safetensors' parse error, a YAML syntax error, too much bad training data, an undecodable
# record that escaped its reader. Subclasses match too.
_REFUSALS_BY_NAME = ("SafetensorError", "YAMLError", "BadDataError", "BadData")
_MAX_MESSAGE = 600


class UserError(Exception):
  """A refused input: the message is the whole story (exit status 1)."""
  exit_code = REFUSED_EXIT


class UsageError(UserError):
  """A wrong command line: unknown flag or config key, missing argument (exit status 2)."""
  exit_code = USAGE_EXIT


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose errors are one `UsageError` line instead of usage text plus a line."""

  def error(self, message):
    raise UsageError(f"{message} (see {self.prog} --help)")


def debug_enabled() -> bool:
  return os.environ.get("ATOKEN_DEBUG", "") not in ("", "0")


def one_line(text: str) -> str:
  text = " ".join(str(text).split())
  return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 3] + "..."


def _os_message(e: OSError) -> str:
  if e.filename is not None and e.strerror:
    where = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else e.filename
    return f"{where}: {e.strerror}"
  return str(e) or type(e).__name__


def describe(e: BaseException) -> tuple[int, str] | None:
  """(exit status, message) for an expected failure; None for a bug."""
  name = type(e).__name__
  if isinstance(e, UserError):
    return e.exit_code, str(e)
  if isinstance(e, KeyboardInterrupt):
    return 130, "interrupted"
  if isinstance(e, pickle.UnpicklingError):  # never echo the loader's advice
    return REFUSED_EXIT, ("refused a pickled checkpoint: only plain tensors are read and "
                          "nothing is unpickled; convert it to .safetensors")
  if _is_absl_flags_error(e) or isinstance(e, argparse.ArgumentError):
    return USAGE_EXIT, str(e)
  if name in ("JaxRuntimeError", "XlaRuntimeError") and "RESOURCE_EXHAUSTED" in str(e):
    first = str(e).strip().splitlines()[0]
    return REFUSED_EXIT, (f"out of accelerator memory ({first}); use smaller inputs "
                          "(tokenize --max-pixels, eval max_pixels) or smaller batches "
                          "(training: batch_rows, row_len)")
  if isinstance(e, subprocess.CalledProcessError):  # a sweep's run; it printed its own line
    cmd = [str(a) for a in e.cmd] if isinstance(e.cmd, (list, tuple)) else [str(e.cmd)]
    run = next((a for a in cmd if a.startswith("--workdir=")), " ".join(cmd))
    return REFUSED_EXIT, f"a launched run failed with exit status {e.returncode}: {run}"
  if isinstance(e, MemoryError):
    return REFUSED_EXIT, "out of host memory; use smaller inputs or a smaller batch"
  if isinstance(e, OSError):
    return REFUSED_EXIT, _os_message(e)
  if isinstance(e, (ValueError, FloatingPointError, ImportError)) or any(
      c.__name__ in _REFUSALS_BY_NAME for c in type(e).__mro__):
    return REFUSED_EXIT, str(e) or name
  return None


def _is_absl_flags_error(e: BaseException) -> bool:
  flags = sys.modules.get("absl.flags")
  return flags is not None and isinstance(e, flags.Error)


def run_command(prog: str, fn: Callable[[], int | None], debug: bool = False) -> int:
  """Runs `fn`; maps its expected failures to one stderr line and an exit status."""
  try:
    return int(fn() or 0)
  except SystemExit:
    raise
  except BaseException as e:  # noqa: BLE001 - this is the boundary
    if debug or debug_enabled():
      raise
    got = describe(e)
    if got is None:
      code, message = INTERNAL_EXIT, (
          f"internal error {type(e).__name__}: {e} (a bug; rerun with ATOKEN_DEBUG=1 to see "
          "the traceback)")
    else:
      code, message = got
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    return code


# ----------------------------------------------------------------------- absl / ml_collections


def config_file_arg(argv: Sequence[str], name: str = "config") -> str | None:
  """The value of --name=V / --name V in argv (None if absent)."""
  for i, a in enumerate(argv):
    if a.startswith(f"--{name}="):
      return a.split("=", 1)[1]
    if a == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _override_for_key(argv: Sequence[str], key: str) -> str | None:
  for a in argv:
    if a.startswith("--config.") and key in a.split("=", 1)[0][len("--config."):].split("."):
      return a.split("=", 1)[0]
  return None


def parse_config_flags(flag_values, argv: Sequence[str]):
  """`flag_values(argv)` for flags holding a `config_flags.DEFINE_config_file("config")`, with a
  missing config file and unknown `--config.a.b` keys as one-line `UsageError`s."""
  spec = config_file_arg(argv)
  if spec is not None:
    path = spec.split(":", 1)[0]
    if not os.path.isfile(path):
      raise UsageError(f"config file not found: {path}")
  try:
    return flag_values(list(argv))
  except (KeyError, AttributeError) as e:
    text = str(e).replace("\\'", "'").replace("\\n", " ").replace("\\", "")
    key = re.search(r'Key "([^"]+)"', text) or re.search(r"'([\w.-]+)'", text)
    if key is None:
      raise
    key = key.group(1)
    flag = _override_for_key(argv, key) or f"--config...{key}"
    hint = re.search(r'Did you mean "([^"]+)"', text)
    raise UsageError(f"{flag}: no such config key {key!r}" + (
        f" (did you mean {hint.group(1)!r}?)" if hint else "")) from None
  except OSError as e:  # config_flags wraps a config file that fails to load
    raise UsageError(f"config file {spec}: {one_line(e)}") from None


def absl_flags_parser(flag_values=None):
  """An `app.run(..., flags_parser=)` that raises one-line errors instead of printing usage."""
  def parse(argv):
    from absl import flags  # pylint: disable=import-outside-toplevel
    fv = flags.FLAGS if flag_values is None else flag_values
    try:
      return parse_config_flags(fv, argv)
    except flags.Error as e:
      raise UsageError(str(e)) from None
  return parse
