"""Stage-wide data defaults (`config.data`) + sparse per-task overrides, resolved in one place."""
import json
import os

import ml_collections
import pytest

from atoken_jax import cli, cli_errors, config_files
from atoken_jax.train import config_check, heldout, resume
from data_pipelines import config as data_config
from experiments import stage2_video, stage3_3d

SAVED = os.path.join(os.path.dirname(__file__), "testdata", "config_before_stage_data.json")


def _json(c):
  return json.loads(c.to_json_best_effort(sort_keys=True))


def _old_layout(cfg):
  """`cfg` as runs saved it before config.data existed: each task's full data, no config.data."""
  old = _json(cfg)
  for name in cfg.tasks:
    old["tasks"][name]["data"] = _json(data_config.resolve_task(cfg, name))
  del old["data"]
  return old


def test_tasks_carry_only_their_batch_shape_sources_and_differences():
  cfg = stage3_3d.get_config("so400m")
  recon = cfg.tasks.video_recon.data
  assert set(recon) == {"batch_rows", "row_len", "max_samples_per_row", "sources", "weights"}
  assert set(cfg.tasks.video_understand.data.video) == {"hflip", "fps", "max_frames", "long"}
  for name in cfg.tasks:  # everything else is read from config.data
    assert set(cfg.tasks[name].data) - {"image", "video", "text"} == set(recon)
  full = {n: data_config.resolve_task(cfg, n) for n in cfg.tasks}
  assert full["video_recon"].video.fps == 0 and full["video_recon"].video.hflip
  assert full["video_understand"].video.fps == 1.0 and full["video_understand"].video.long == \
      "truncate" and not full["video_understand"].video.hflip
  assert not full["image_understand"].image.hflip and full["image_recon"].image.hflip
  assert [n for n, f in full.items() if f.text.required] == [
      n for n in cfg.tasks if n.endswith("_understand")]
  assert (full["voxels_recon"].row_len, full["image_recon"].row_len) == (32768, 16384)
  assert all(f.name == n and f.modalities == (n.split("_")[0],) for n, f in full.items())
  assert full["voxels_understand"].task == "understanding"


def test_a_stage_wide_field_reaches_every_task_and_a_task_field_only_its_task():
  cfg = stage2_video.get_config("tiny")
  cfg.data.video.max_side, cfg.data.num_workers = 77, 3
  cfg.tasks.video_recon.data.row_len = 512
  cfg.tasks.video_understand.data.video.max_frames = 4
  full = {n: data_config.resolve_task(cfg, n) for n in cfg.tasks}
  assert all(f.video.max_side == 77 and f.num_workers == 3 for f in full.values())
  assert full["video_recon"].row_len == 512 and full["video_understand"].row_len == 256
  assert full["video_understand"].video.max_frames == 4
  assert full["video_recon"].video.max_frames == 8
  assert cfg.data.video.max_frames == 8  # resolving copies: config.data itself is unchanged


def test_sources_of_a_task_default_to_the_stage_and_own_sources_bring_own_weights():
  cfg = stage2_video.get_config("tiny")
  cfg.data.sources, cfg.data.weights = ("arrayrecord:/a", "folder:/b"), (3.0, 1.0)
  cfg.tasks.video_recon.data.sources = ("folder:/clips",)
  cfg.tasks.image_understand.data.weights = (1.0, 1.0)
  full = {n: data_config.resolve_task(cfg, n) for n in cfg.tasks}
  assert (full["image_recon"].sources, full["image_recon"].weights) == (
      ("arrayrecord:/a", "folder:/b"), (3.0, 1.0))
  assert (full["video_recon"].sources, full["video_recon"].weights) == (("folder:/clips",), ())
  assert full["image_understand"].weights == (1.0, 1.0)


@pytest.mark.parametrize("set_typo, field, hint", [
    (lambda d: setattr(d, "row_lenn", 8), "config.tasks.image_recon.data.row_lenn", "row_len"),
    (lambda d: setattr(d, "imag", ml_collections.ConfigDict({"hflip": False})),
     "config.tasks.image_recon.data.imag", "image"),
    (lambda d: d.image.update({"max_sid": 64}), "config.tasks.image_recon.data.image.max_sid",
     "max_side"),
])
def test_an_override_config_data_lacks_is_refused_naming_it(set_typo, field, hint):
  cfg = stage2_video.get_config("tiny")
  set_typo(cfg.tasks.image_recon.data)
  with pytest.raises(ValueError, match=f"{field}: no such data field.*{hint}"):
    data_config.resolve_task(cfg, "image_recon")
  with pytest.raises(config_check.ConfigError) as e:  # the trainer refuses it before any work
    config_check.validate(cfg)
  assert str(e.value).startswith(field) and "\n" not in str(e.value)


def test_a_task_without_its_batch_shape_or_with_a_wrong_type_is_refused():
  cfg = stage2_video.get_config("tiny")
  del cfg.tasks.video_recon.data["row_len"]
  with pytest.raises(ValueError, match="config.tasks.video_recon.data.row_len: missing"):
    data_config.resolve_task(cfg, "video_recon")
  cfg = stage2_video.get_config("tiny")  # a config file adding a per-task field of a wrong type
  cfg.tasks.video_recon.data.video = ml_collections.ConfigDict({"max_side": "big"})
  with pytest.raises(ValueError, match="video_recon.data.video.max_side: .*big"):
    data_config.resolve_task(cfg, "video_recon")


def test_kv_cache_mismatch_names_the_stage_wide_field():
  cfg = stage2_video.get_config("tiny")
  cfg.data.kv_cache_frames = 2
  with pytest.raises(config_check.ConfigError, match=r"^config.data.kv_cache_frames = 2"):
    config_check.validate(cfg)
  cfg.model.decoder_kv_cache_frames = 2
  config_check.validate(cfg)


def test_a_config_saved_before_config_data_resolves_to_what_it_saved():
  with open(SAVED) as f:
    saved = json.load(f)
  cfg = ml_collections.ConfigDict(saved)
  assert "data" not in cfg
  config_check._check_data(cfg, cfg.tasks)  # pylint: disable=protected-access
  for name in cfg.tasks:
    assert _json(data_config.resolve_task(cfg, name)) == saved["tasks"][name]["data"]
  assert heldout.recon_modalities(cfg) == ["image", "video"]


def test_the_old_layout_of_todays_config_resolves_like_the_new_one():
  cfg = stage2_video.get_config("tiny")
  cfg.data.video.max_side = 80
  old = ml_collections.ConfigDict(_old_layout(cfg))
  for name in cfg.tasks:
    assert _json(data_config.resolve_task(old, name)) == _json(
        data_config.resolve_task(cfg, name))
  assert heldout.recon_modalities(old) == heldout.recon_modalities(cfg) == ["image", "video"]


def test_resume_compares_full_task_data_across_the_two_layouts():
  cfg = stage2_video.get_config("tiny")
  saved = _old_layout(cfg)
  current = _json(cfg)
  assert resume.config_changes(saved, current) == ({}, {})
  cfg.data.video.max_side = 80  # a stage-wide change shows as each task's change
  identity, other = resume.config_changes(saved, _json(cfg))
  assert identity == {} and set(other) == {f"tasks.{n}.data.video.max_side" for n in cfg.tasks}
  assert other["tasks.video_recon.data.video.max_side"] == (96, 80)


@pytest.mark.parametrize("override, says", [
    ("--config.tasks.image_recon.data.num_workers=2",
     "num_workers is stage-wide: --config.data.num_workers=2"),
    ("--config.tasks.video_understand.data.video.strides=(1,2)",
     "video.strides is stage-wide: --config.data.video.strides=(1,2)"),
    ("--config.data.row_len=512",
     "row_len is set per task: --config.tasks.image_recon.data.row_len=512"),
])
def test_a_field_given_on_the_wrong_level_names_the_right_spelling(override, says):
  with pytest.raises(cli_errors.UsageError) as e:
    config_files.load("stage2_video:tiny", [override])
  assert says in str(e.value) and "\n" not in str(e.value)
  assert str(e.value).startswith(override.split("=")[0])


def test_fields_on_their_level_are_accepted_and_plain_typos_stay_plain():
  cfg = config_files.load("stage2_video:tiny", [
      "--config.data.num_workers=2", "--config.tasks.video_recon.data.row_len=512",
      "--config.tasks.image_recon.data.sources=('folder:/x',)"])
  assert cfg.data.num_workers == 2 and cfg.tasks.video_recon.data.row_len == 512
  assert data_config.resolve_task(cfg, "image_recon").sources == ("folder:/x",)
  with pytest.raises(cli_errors.UsageError, match="no such config key 'imag'.*'image'"):
    config_files.load("stage2_video:tiny", ["--config.tasks.image_recon.data.imag.hflip=False"])


def test_train_reports_a_misplaced_data_field_in_one_line(capsys, tmp_path):
  code = cli.main(["atoken", "train", "--config=stage1_image:tiny", f"--workdir={tmp_path}",
                   "--config.tasks.image_recon.data.seed=3"])
  err = capsys.readouterr().err
  assert code == 2 and err.count("\n") == 1 and "--config.data.seed=3" in err
  assert not os.listdir(tmp_path)  # refused before anything was written
