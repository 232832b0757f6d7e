"""Experiment configs by name as well as by file."""
import os

import pytest

from atoken_jax import config_files
from atoken_jax.train import launch

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "experiments")


def test_a_bundled_name_resolves_to_its_file_with_the_argument_kept():
  got = config_files.resolve("stage1_image:tiny")
  path, _, arg = got.partition(":")
  assert os.path.samefile(path, os.path.join(EXPERIMENTS, "stage1_image.py")) and arg == "tiny"
  assert config_files.resolve("eval_tiny:/data/root").endswith("eval_tiny.py:/data/root")
  assert config_files.resolve("stage3_3d").endswith("stage3_3d.py")


def test_files_and_paths_pass_through_unchanged(tmp_path, monkeypatch):
  own = tmp_path / "mine.py"
  own.write_text("def get_config():\n  return None\n")
  assert config_files.resolve(f"{own}:x") == f"{own}:x"
  assert config_files.resolve("no/such/file.py:tiny") == "no/such/file.py:tiny"
  # a file in the cwd named like a bundled experiment wins over it
  monkeypatch.chdir(tmp_path)
  (tmp_path / "stage1_image").write_text("")
  assert config_files.resolve("stage1_image:tiny") == "stage1_image:tiny"


def test_only_modules_with_get_config_are_names():
  names = config_files.bundled()
  assert {"stage1_image", "stage2_video", "stage3_3d", "stage4_fsq", "eval_tiny",
          "gs_decoder_alone"} <= set(names)
  assert "common" not in names and "__init__" not in names
  with pytest.raises(ValueError, match="stage1_image") as e:
    config_files.resolve("common:tiny")
  assert "\n" not in str(e.value)


def test_argv_rewrites_both_flag_forms_and_nothing_else():
  argv = ["atoken train", "--config=stage1_image:tiny", "--config.total_steps=2",
          "--workdir=stage1_image"]
  out = config_files.resolve_argv(argv)
  assert out[0] == argv[0] and out[2:] == argv[2:]
  assert out[1].startswith("--config=") and out[1].endswith("stage1_image.py:tiny")
  spaced = config_files.resolve_argv(["p", "--config", "stage4_fsq:tiny"])
  assert spaced[1] == "--config" and spaced[2].endswith("stage4_fsq.py:tiny")


def test_train_with_an_unknown_name_fails_with_one_line(capsys):
  assert launch.train_main(["atoken train", "--config=stage9:tiny", "--workdir=/tmp/x"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "stage1_image" in err and err.count("\n") == 1
