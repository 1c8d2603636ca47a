# The README's two commands: `make run` (set up, then the main job) and `make test` (set up, then the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.skdd-installed

.PHONY: setup run test image pipelines clean

setup: $(STAMP)

# Re-installs only when the pinned set or the package metadata changed; quick otherwise.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[pipeline,test]'
	touch $(STAMP)

# Offline machines: point ingest at a local copy of the dataset when one exists (skdd.data.offline).
run: setup
	eval "$$($(BIN)/python -m skdd.data.offline params.yaml)" && PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@cat artifacts/report/report.md

test: setup
	$(BIN)/python -m pytest -q

# The committed Kubeflow pipelines: the main one and each shipped preset's skdd-reproduce (tests compare them with
# a fresh compile; recompile after changing a component, a pipeline, params.yaml or a preset).
REPRODUCE_PRESETS := smoke cpu-budget gpu-short gpu-mnist gpu-cifar10
pipelines: setup
	$(BIN)/skdd pipeline compile --output pipelines/skdd_pipeline.yaml
	for p in $(REPRODUCE_PRESETS); do \
	  $(BIN)/skdd pipeline compile --preset benchmarks/presets/$$p.yaml --output pipelines/reproduce-$$p.yaml || exit 1; \
	done

# The image every pipeline step runs in (containers/build_image.py: BuildKit, works without a registry too).
image:
	$(PYTHON) containers/build_image.py

clean:
	rm -rf artifacts .pytest_cache kfp-local
