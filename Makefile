# One task runner; .ci/run calls these recipes.
PYTHON ?= python3
HTCSIM_TRACE_DIR ?= $(abspath ../shared/traces)
export HTCSIM_TRACE_DIR

.PHONY: install test lint bench annotate clean

install:
	$(PYTHON) -m pip install -e ".[test]"

test:
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check htcsim tests benchmarks experiments
	$(PYTHON) -m mypy
	lint-imports

bench:
	$(PYTHON) -m pytest benchmarks -q --benchmark-only --benchmark-columns=min,median,max,rounds

annotate:
	mkdir -p build
	cython -3 -a core/_core.pyx -o build/_core.c

clean:
	rm -rf build htcsim/*.so core/*.c core/*.html
