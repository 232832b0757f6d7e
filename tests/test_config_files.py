"""Experiment configs by name as well as by file."""
import os

import pytest

from atoken_jax import cli, cli_errors, config_files

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
  with pytest.raises(cli_errors.UsageError, match="stage1_image") as e:
    config_files.resolve("common:tiny")
  assert "\n" not in str(e.value)


def test_overrides_and_the_rest_of_argv_are_told_apart():
  spec, overrides, rest = config_files.split_argv(
      ["--config", "stage4_fsq:tiny", "--config.total_steps=2", "--config.optim.lr", "0.1",
       "--workdir=stage1_image"])
  assert spec == "stage4_fsq:tiny" and rest == ["--workdir=stage1_image"]
  assert overrides == ["--config.total_steps=2", "--config.optim.lr=0.1"]
  cfg = config_files.load(spec, overrides)
  assert cfg.total_steps == 2 and cfg.optim.lr == 0.1 and cfg.model.quantizer == "fsq"


def test_an_unknown_key_or_name_is_a_one_line_usage_error():
  with pytest.raises(cli_errors.UsageError, match="latnt_dim") as e:
    config_files.load("stage1_image:tiny", ["--config.model.latnt_dim=16"])
  assert "\n" not in str(e.value)
  with pytest.raises(cli_errors.UsageError, match="stage1_image"):
    config_files.parse(["--config=stage9:tiny"])


def test_train_with_an_unknown_name_fails_with_one_line(capsys):
  assert cli.main(["atoken", "train", "--config=stage9:tiny", "--workdir=/tmp/x"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("atoken train: error: ") and "stage1_image" in err
  assert err.count("\n") == 1
