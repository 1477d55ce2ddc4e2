# cao: codex-account-orchestrator. `make install` then `make test`.
VENV          := .venv
PY            := $(VENV)/bin/python
# The real Codex CLI versions the end-to-end tests run against (pinned).
CODEX_VERSIONS := 0.169.0 0.171.0
CODEX_BINS    := $(foreach v,$(CODEX_VERSIONS),.tools/codex-$(v)/node_modules/.bin/codex)
export CAO_TEST_CODEX_VERSIONS := $(CODEX_VERSIONS)
export CAO_TEST_CODEX_ROOT := $(abspath .tools)

.PHONY: install codex test test-fast lint bench simulate clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/find-python
	@py=$$(scripts/find-python) || exit 1; \
	  echo "using $$py"; \
	  [ -x $(PY) ] || "$$py" -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@
	@echo "installed: $(VENV)/bin/cao  (activate with: . $(VENV)/bin/activate)"

# The real Codex CLI, each pinned version, for end-to-end tests (into an ignored folder).
codex: $(CODEX_BINS)

.tools/codex-%/node_modules/.bin/codex:
	npm install --prefix .tools/codex-$* --no-audit --no-fund --loglevel=error @openai/codex@$*

test: install codex
	$(PY) -m pytest

# Everything but the real-Codex end-to-end tests.
test-fast: install
	$(PY) -m pytest -m "not codex"

# mypy cannot follow setuptools' editable import hook, so it reads a link tree shaped like the
# installed package.
lint: install
	@mkdir -p .lint/cao && for d in addons cli config; do ln -sfn ../../$$d .lint/cao/$$d; done
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	MYPYPATH=.lint $(VENV)/bin/mypy -p cao

bench: install
	$(PY) -m tests.bench.run

# Which routing strategy wastes least and blocks least: a simulated week (seconds, no network).
simulate: install
	$(PY) -m tests.sim.run

clean:
	rm -rf $(VENV) .tools .lint build *.egg-info
