"""Every bad input of a table goes through the real `atoken` CLI and comes back as one stderr
line `atoken <cmd>: error: ...` with the documented exit status (2: wrong command line, 1: input
refused) and no traceback. Most cases call `atoken_jax.cli.main` in-process (one jax start-up);
the `subprocess` ones run `python -m atoken_jax.cli`, so absl's flag parsing, app.run and the
interpreter's own exit path are covered too. `atoken train` / `sweep` parse into absl's global
FLAGS, which parse once per process, so all their cases run as subprocesses."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from atoken_jax import cli, cli_errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_CFG = os.path.join(REPO, "experiments", "stage1_image.py") + ":tiny"
GS_CFG = os.path.join(REPO, "experiments", "gs_decoder_alone.py") + ":tiny"
EVAL_CFG = os.path.join(REPO, "experiments", "eval_tiny.py")


@dataclasses.dataclass
class Case:
  name: str
  args: list[str]
  code: int
  says: str  # a fragment the line must contain (the file, key or limit it names)
  subprocess: bool = False


def Sub(*args) -> Case:  # noqa: N802 - reads as a table row kind, like Case
  return Case(*args, subprocess=True)


def _cases(d: str) -> list[Case]:
  p = lambda *parts: os.path.join(d, *parts)
  tok = ["--ml-atoken", p("tiny.safetensors"), "--yaml", p("tiny.yaml")]
  return [
      # atoken train / sweep / gs train: absl flags + ml_collections configs
      Sub("unknown config key", ["train", f"--config={TRAIN_CFG}", f"--workdir={p('w')}",
                                 "--config.model.latnt_dim=16"], 2, "--config.model.latnt_dim"),
      Sub("missing config file", ["train", "--config=nope/x.py:tiny", f"--workdir={p('w')}"],
          2, "nope/x.py"),
      Sub("workdir is a file", ["train", f"--config={TRAIN_CFG}", f"--workdir={p('afile')}"],
          1, p("afile")),
      Sub("workdir below a file", ["train", f"--config={TRAIN_CFG}",
                                   f"--workdir={p('afile', 'run')}"], 1, p("afile", "run")),
      Sub("bad config value", ["train", f"--config={TRAIN_CFG}", f"--workdir={p('w')}",
                               "--config.total_steps=many"], 2, "--config.total_steps"),
      Sub("misspelt top-level key", ["train", f"--config={TRAIN_CFG}", f"--workdir={p('w')}",
                                     "--config.total_step=3"], 2, "'total_steps'"),
      Sub("train without workdir", ["train", f"--config={TRAIN_CFG}"], 2, "--workdir"),
      Sub("unknown flag", ["train", "--bogus=1"], 2, "bogus"),
      Sub("sweep unknown key", ["sweep", f"--config={TRAIN_CFG}", f"--workdir={p('w')}",
                                "--config.nope=1"], 2, "--config.nope"),
      Case("gs train unknown key", ["gs", "train", f"--config={GS_CFG}", f"--workdir={p('w')}",
                                    "--config.nope=1"], 2, "--config.nope"),
      Case("gs unknown command", ["gs", "frob"], 2, "frob"),
      Sub("unknown command", ["frob"], 2, "frob"),
      # atoken tokenize
      Sub("malicious .pt", ["tokenize", p("good.png"), "--ml-atoken", p("evil.pt"),
                            "--yaml", p("tiny.yaml")], 1, p("evil.pt")),
      Case("garbage safetensors", ["tokenize", p("good.png"), "--ml-atoken",
                                   p("garbage.safetensors"), "--yaml", p("tiny.yaml")],
           1, p("garbage.safetensors")),
      Sub("oversized photo refused", ["tokenize", p("big.png"), "--on-oversize=refuse", *tok],
          1, "1048576"),
      Case("missing input", ["tokenize", p("nope.png"), *tok], 1, p("nope.png")),
      Case("folder as input", ["tokenize", p("folder"), *tok], 1, p("folder")),
      Case("not an image", ["tokenize", p("text.png"), *tok], 1, p("text.png")),
      *([Case("unreadable image", ["tokenize", p("locked.png"), *tok], 1, p("locked.png"))]
        if os.geteuid() != 0 else []),  # root reads everything
      Case("unsupported type", ["tokenize", p("notes.txt"), *tok], 1, "'.txt'"),
      Case("no model given", ["tokenize", p("good.png")], 2, "--checkpoint"),
      Case("checkpoint not a model dir", ["tokenize", p("good.png"), "--checkpoint",
                                          p("folder")], 1, p("folder")),
      Case("missing yaml", ["tokenize", p("good.png"), "--ml-atoken", p("tiny.safetensors"),
                            "--yaml", p("nope.yaml")], 1, p("nope.yaml")),
      Case("broken yaml", ["tokenize", p("good.png"), "--ml-atoken", p("tiny.safetensors"),
                           "--yaml", p("broken.yaml")], 1, p("broken.yaml")),
      Case("folder as yaml", ["tokenize", p("good.png"), "--ml-atoken", p("tiny.safetensors"),
                              "--yaml", p("folder")], 1, p("folder")),
      Case("max-pixels out of range", ["tokenize", p("good.png"), "--max-pixels=10", *tok],
           1, "max_pixels"),
      Case("bad on-oversize", ["tokenize", p("good.png"), "--on-oversize=crop", *tok],
           2, "crop"),
      # atoken export / data prepare / eval
      Case("export bad --step", ["export", f"--workdir={p('w')}", "--step=last",
                                 f"--out={p('o.safetensors')}"], 2, "--step"),
      Case("export without --out", ["export", f"--workdir={p('w')}"], 2, "--out"),
      Sub("dataset destination is a file", ["data", "prepare", p("images"), p("afile"),
                                            "--no-progress"], 1, p("afile")),
      Case("dataset source missing", ["data", "prepare", p("nope"), p("ds")], 2, p("nope")),
      Case("data without prepare", ["data"], 2, "prepare"),
      Case("eval missing config", ["eval", "--config", p("nope.py"), "--checkpoint",
                                   "random:tiny"], 2, p("nope.py")),
      Case("eval unknown section", ["eval", "--config", f"{EVAL_CFG}:{d}", "--checkpoint",
                                    "random:tiny", "--config.taks.images.size=3"], 2, "taks"),
      Case("eval missing checkpoint", ["eval", "--config", f"{EVAL_CFG}:{d}", "--checkpoint",
                                       p("nope.safetensors")], 1, p("nope.safetensors")),
  ]


def _png(path, h, w, level=6):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(path, compress_level=level)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  torch = pytest.importorskip("torch")
  from atoken_jax import config as config_lib
  from atoken_jax.interop import ml_atoken
  import yaml
  d = tmp_path_factory.mktemp("bad_inputs")
  _png(d / "good.png", 40, 48)
  Image.new("RGB", (6000, 4000), (90, 120, 200)).save(d / "big.png", compress_level=1)
  (d / "text.png").write_text("not a picture")
  _png(d / "locked.png", 16, 16)
  os.chmod(d / "locked.png", 0)
  (d / "notes.txt").write_text("hello")
  (d / "broken.yaml").write_text("model: [unclosed\n")
  (d / "afile").write_text("a file, not a folder")
  (d / "folder").mkdir()
  (d / "images").mkdir()
  _png(d / "images" / "a.png", 32, 32)
  (d / "garbage.safetensors").write_bytes(b"\xff" * 64)
  (d / "tiny.safetensors").write_bytes(b"\xff" * 64)  # never reached: inputs fail first
  with open(d / "tiny.yaml", "w") as f:
    yaml.safe_dump({"model": {"model_cfg": {"arch_cfg": ml_atoken.arch_cfg_from_config(
        config_lib.model_config("tiny"))}}}, f)

  class Payload:  # what an attacker's checkpoint holds: a call run at unpickling time
    def __reduce__(self):
      return (os.system, (f"touch {d / 'PWNED'}",))
  torch.save({"w": Payload()}, d / "evil.pt")
  return d


def _lines(text: str) -> list[str]:
  return [line for line in text.splitlines() if line.strip()]


def _check(case: Case, code: int, err: str, d) -> None:
  lines = _lines(err)
  assert "Traceback" not in err, f"{case.name}: {err}"
  assert len(lines) == 1, f"{case.name}: expected one line, got {lines}"
  assert lines[0].startswith("atoken ") and ": error: " in lines[0], lines[0]
  assert case.says in lines[0], f"{case.name}: {case.says!r} not in {lines[0]!r}"
  assert "weights_only=False" not in err and "internal error" not in err, lines[0]
  assert code == case.code, f"{case.name}: exit {code}, expected {case.code}: {lines[0]}"
  assert not os.path.exists(d / "PWNED")


def test_in_process_cases(inputs, capsys):
  for case in _cases(str(inputs)):
    if case.subprocess:
      continue
    capsys.readouterr()
    code = cli.main(["atoken"] + case.args)
    _check(case, code, capsys.readouterr().err, inputs)


def test_subprocess_cases(inputs):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  for case in _cases(str(inputs)):
    if not case.subprocess:
      continue
    p = subprocess.run([sys.executable, "-m", "atoken_jax.cli"] + case.args, cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=300)
    _check(case, p.returncode, p.stderr, inputs)
  assert not os.path.exists(inputs / "w")  # nothing was created by a refused command
  assert (inputs / "afile").read_text() == "a file, not a folder"


def test_unexpected_errors_are_one_line_with_a_hint_unless_debugging(capsys, monkeypatch):
  def bug():
    raise KeyError("oops")
  monkeypatch.delenv("ATOKEN_DEBUG", raising=False)
  assert cli_errors.run_command("atoken x", bug) == cli_errors.INTERNAL_EXIT
  (line,) = _lines(capsys.readouterr().err)
  assert "internal error KeyError" in line and "ATOKEN_DEBUG=1" in line
  with pytest.raises(KeyError):
    cli_errors.run_command("atoken x", bug, debug=True)
  monkeypatch.setenv("ATOKEN_DEBUG", "1")
  with pytest.raises(ValueError):  # expected errors too keep their traceback when debugging
    cli_errors.run_command("atoken x", lambda: (_ for _ in ()).throw(ValueError("bad")))


def test_oom_and_disk_full_are_one_line(capsys):
  import jax

  def oom():  # what XLA raises when an allocation does not fit
    raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                          "309.00GiB.\nmore detail\n")
  assert cli_errors.run_command("atoken tokenize", oom) == 1
  (line,) = _lines(capsys.readouterr().err)
  assert "309.00GiB" in line and "--max-pixels" in line

  from data_pipelines.bad_data import BadDataError

  def bad_data():
    raise BadDataError("[image_recon] 12 of 60 records were bad (decode_error=12): a.png ...")
  assert cli_errors.run_command("atoken train", bad_data) == 1
  assert "12 of 60" in _lines(capsys.readouterr().err)[0]

  def sweep_run_failed():
    raise subprocess.CalledProcessError(1, ["python", "-m", "atoken_jax.cli", "train",
                                            "--workdir=root/000_lr=0.1", "--config.lr=0.1"])
  assert cli_errors.run_command("atoken sweep", sweep_run_failed) == 1
  assert "000_lr=0.1" in _lines(capsys.readouterr().err)[0]

  def full():
    raise OSError(28, "No space left on device", "/data/ckpt/7")
  assert cli_errors.run_command("atoken train", full) == 1
  assert _lines(capsys.readouterr().err) == [
      "atoken train: error: /data/ckpt/7: No space left on device"]
