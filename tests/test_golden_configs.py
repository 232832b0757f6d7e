"""Golden dumps of every experiment's resolved config: a changed default shows up in review.

Regenerate after an intended change: UPDATE_GOLDEN=1 python -m pytest tests/test_golden_configs.py
"""
import importlib
import json
import os

import pytest

EXPERIMENTS = ["stage1_image", "stage2_video", "stage3_3d", "stage4_fsq"]
ARGS = ["tiny", "base", "so400m"]
GOLDEN = os.path.join(os.path.dirname(__file__), "golden_configs")


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("arg", ARGS)
def test_resolved_config_matches_golden(name, arg):
  from atoken_jax.train import config_check
  cfg = importlib.import_module(f"experiments.{name}").get_config(arg)
  config_check.validate(cfg)
  resolved = json.loads(cfg.to_json_best_effort(sort_keys=True))
  path = os.path.join(GOLDEN, f"{name}.{arg}.json")
  if os.environ.get("UPDATE_GOLDEN") or not os.path.exists(path):
    if os.environ.get("CI") and not os.path.exists(path):
      pytest.fail(f"no golden config {path}; run UPDATE_GOLDEN=1 pytest {__file__}")
    with open(path, "w") as f:
      json.dump(resolved, f, indent=1, sort_keys=True)
  with open(path) as f:
    golden = json.load(f)
  assert resolved == golden, (f"{name}:{arg} differs from {path}; if intended, regenerate with "
                              "UPDATE_GOLDEN=1")
