"""bench/device_check.sh: it parses, refuses bad arguments in one line, and (slow) its CPU-sized
smoke mode runs every part to the summary."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "device_check.sh")


def _run(*args, timeout=60):
  env = {**os.environ, "PYTHON": sys.executable}
  return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=env,
                        timeout=timeout, cwd=ROOT)


def test_script_parses_and_refuses_bad_arguments():
  assert subprocess.run(["bash", "-n", SCRIPT]).returncode == 0
  r = _run("dense", "auto", "third")
  assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
  assert "at most two attention implementations" in r.stderr
  r = _run("--bogus")
  assert r.returncode == 2 and "unknown option --bogus" in r.stderr


@pytest.mark.slow
def test_smoke_mode_runs_every_part():
  r = _run("--smoke", timeout=3600)
  assert r.returncode == 0, r.stderr[-2000:]
  summary = r.stdout[r.stdout.index("=== summary"):]
  assert summary.count("tokens/s") == 2, summary  # old and new attention train steps
  assert "FAILED" not in summary and "TIMED OUT" not in summary, summary
  assert "skipped: pass --ml-atoken" in summary
