"""A wheel built from this repository trains: installed (non-editable) into a fresh directory,
run from outside the checkout, `atoken train --config=stage1_image:tiny` on the bundled data.

Offline: the wheel is built without build isolation (setuptools from the current environment)
and installed with --no-deps; the installed dependencies are reused, and PYTHONPATH puts the
wheel's packages ahead of any editable install.
"""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "atoken_jax", "data_pipelines",
           "experiments")


def _run(cmd, **kw):
  out = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
  assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
  return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """-> (site dir with the installed wheel, the wheel file). Built from a copy of the sources
  so that the checkout gets no build/ or *.egg-info."""
  root = tmp_path_factory.mktemp("wheel")
  src, dist, site = root / "src", root / "dist", root / "site"
  src.mkdir()
  for name in SOURCES:
    path = os.path.join(REPO, name)
    if os.path.isdir(path):
      shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
      shutil.copy(path, src / name)
  pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
  _run(pip + ["wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(dist)])
  (wheel,) = dist.glob("*.whl")
  _run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)])
  return site, wheel


def test_the_wheel_holds_every_package_and_the_console_script(installed):
  _, wheel = installed
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
  for module in ("atoken_jax/train/__init__.py", "atoken_jax/train/loop.py",
                 "atoken_jax/gs3d/task.py", "data_pipelines/default_data.py",
                 "experiments/stage1_image.py", "experiments/common.py"):
    assert module in names, module
  # every package directory of the checkout is a package in the wheel
  for pkg in ("atoken_jax", "data_pipelines"):
    for folder, dirs, files in os.walk(os.path.join(REPO, pkg)):
      dirs[:] = [d for d in dirs if d != "__pycache__"]
      if any(f.endswith(".py") for f in files):
        rel = os.path.relpath(folder, REPO).replace(os.sep, "/")
        assert f"{rel}/__init__.py" in names, f"{rel} is not a package: the wheel drops it"
  assert "atoken = atoken_jax.cli:main" in entry_points


@pytest.mark.slow
def test_the_installed_wheel_trains_the_tiny_preset_from_outside_the_checkout(installed,
                                                                              tmp_path):
  site, _ = installed
  env = {**os.environ, "PYTHONPATH": str(site), "ATOKEN_DATA_CACHE": str(tmp_path / "data"),
         "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)  # one device, as a user's CPU run
  cwd = tmp_path / "elsewhere"
  cwd.mkdir()
  where = _run([sys.executable, "-c", "import atoken_jax, data_pipelines, experiments; "
                "print(atoken_jax.__file__, data_pipelines.__file__, experiments.__file__)"],
               cwd=cwd, env=env).stdout.split()
  assert all(p.startswith(str(site)) for p in where), where
  workdir = tmp_path / "run"
  _run([str(site / "bin" / "atoken"), "train", "--config=stage1_image:tiny",
        f"--workdir={workdir}", "--config.total_steps=2", "--config.log_every=1"],
       cwd=cwd, env=env, timeout=900)
  assert "2" in os.listdir(workdir / "checkpoints")
  # a bare name that is not a bundled experiment: one line naming the choices
  bad = subprocess.run([str(site / "bin" / "atoken"), "train", "--config=stage9:tiny",
                        f"--workdir={workdir}"], cwd=cwd, env=env, capture_output=True,
                       text=True, check=False)
  assert bad.returncode == 2 and "stage1_image" in bad.stderr
  assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
