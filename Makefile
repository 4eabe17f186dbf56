# The two commands of the README: `make demo` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS := test,ha,fast,asgi,deploy,load,proctitle,metrics

.PHONY: test test-slow demo lint bench deps clean

deps:
	bash scripts/system-deps.sh

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

lint: $(VENV)/.installed
	$(PY) -m ruff check .

# The suite CI runs; long scenarios (marked slow: many seeds, whole chaos runs) are
# left to `make test-slow`, whose figures go in the notes.
test: deps $(VENV)/.installed lint
	$(PY) -m pytest -n 2 -q -p no:cacheprovider -m "not slow"

test-slow: deps $(VENV)/.installed
	$(PY) -m pytest -n 2 -q -p no:cacheprovider -m slow

# Two minutes of load on a local three-node cluster while it is hurt (loadtests/
# scenarios/standard.toml); prints the summary, leaves report.json and chaos.png in
# reports/demo. Everything it started is stopped at the end, and on Ctrl-C.
demo: deps $(VENV)/.installed
	$(PY) -m loadtests.chaos --scenario loadtests/scenarios/standard.toml --out reports/demo

bench: deps $(VENV)/.installed
	$(PY) loadtests/bench.py

clean:
	rm -rf $(VENV) build *.egg-info reports
