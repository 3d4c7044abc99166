# selu-sweep: every target sets itself up (creates .venv and installs the project if needed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test sweep smoke lint bench clean

LOG    := $(VENV)/setup.log
# Run a set-up step quietly: its output goes to $(LOG), shown only when the step fails.
QUIET   = >>$(LOG) 2>&1 || { echo "setup failed; the log ($(LOG)) ends with:"; tail -n 40 $(LOG); exit 1; }

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "setup: creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@: > $(LOG)
	@echo "setup: upgrading pip"
	@$(PY) -m pip install --quiet --upgrade pip $(QUIET)
	@echo "setup: installing selu-sweep with its dev tools and integrations (log: $(LOG))"
	@$(PY) -m pip install --quiet -e ".[dev]" $(QUIET)
	@touch $(STAMP)
	@echo "setup: done"

test: $(STAMP)           ## run the test suite (offline; local S3, PostgreSQL and Ray clusters; 24-60 min on 2 cores)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

sweep: $(STAMP)          ## the main job: python sweeps/run.py with configs/default.yaml
	$(PY) sweeps/run.py $(ARGS)

smoke: $(STAMP)          ## the whole pipeline offline on synthetic data, in under 2 minutes
	$(PY) sweeps/run.py --config sweeps/configs/smoke.yaml --name smoke --overwrite $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)          ## analysis speed benchmark (see benchmarks/README.md)
	$(PY) benchmarks/bench_analysis.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
