# cao: codex-account-orchestrator. `make install` then `make test`.
VENV          := .venv
PY            := $(VENV)/bin/python
CODEX_VERSION := 0.169.0
CODEX_DIR     := .tools/codex
CODEX         := $(CODEX_DIR)/node_modules/.bin/codex
export CAO_TEST_CODEX := $(abspath $(CODEX))

.PHONY: install codex test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/find-python
	@py=$$(scripts/find-python) || exit 1; \
	  echo "using $$py"; \
	  [ -x $(PY) ] || "$$py" -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@
	@echo "installed: $(VENV)/bin/cao  (activate with: . $(VENV)/bin/activate)"

# The real Codex CLI, pinned, for end-to-end tests (into an ignored folder).
codex: $(CODEX)

$(CODEX):
	npm install --prefix $(CODEX_DIR) --no-audit --no-fund --loglevel=error @openai/codex@$(CODEX_VERSION)

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

clean:
	rm -rf $(VENV) .tools .lint build *.egg-info
