# One-command set-up: a virtual environment with the exact versions CI uses.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup lint test demo clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints/ci.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints/ci.txt -e '.[test]'
	touch $@

lint: setup
	$(VENV)/bin/ruff check vqbench plugins tests
	$(VENV)/bin/ruff format --check vqbench plugins tests
	$(VENV)/bin/mypy vqbench

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/vqbench run benchmarks/quickstart.yaml

clean:
	rm -rf $(VENV) build *.egg-info
