# The two set-up commands of the README: `make run` (install, run the default experiment) and
# `make test` (install with the test extra, run the tests). Both work with a fresh machine's
# pip 23: a virtual environment in .venv and extras, no dependency groups.

VENV := .venv
PYTHON := $(VENV)/bin/python

.PHONY: run test

$(PYTHON):
	python3 -m venv $(VENV)

run: $(PYTHON)
	$(PYTHON) -m pip install -q -e .
	$(VENV)/bin/tdvsm run

test: $(PYTHON)
	$(PYTHON) -m pip install -q -e '.[test]'
	$(PYTHON) -m pytest
