# The two commands of the README: `make demo` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS := test,ha,fast,asgi,deploy,load,proctitle,metrics

.PHONY: test test-slow test-asan demo lint bench bench-deps deps clean

deps:
	bash scripts/system-deps.sh

# setup.py and the C source: the editable install builds the accelerator in place.
$(VENV)/.installed: pyproject.toml setup.py server/_accel.c server/accel_respond.c server/accel_take.c server/accel_environ.c server/accel_slots.c server/accel_serve.c server/accel.h
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

lint: $(VENV)/.installed
	$(PY) -m ruff check .

# The suite CI runs; long scenarios (marked slow: many seeds, whole chaos runs) are
# left to `make test-slow`, whose figures go in the notes.
test: deps $(VENV)/.installed lint test-asan
	$(PY) -m pytest -n 2 -q -p no:cacheprovider -m "not slow"

# The compiled accelerator's differential tests under ASan and UBSan (about a minute;
# says why and skips without a compiler).
test-asan: $(VENV)/.installed
	PY=$(PY) bash scripts/test-asan.sh

test-slow: deps $(VENV)/.installed
	$(PY) -m pytest -n 2 -q -p no:cacheprovider -m slow

# Two minutes of load on a local three-node cluster while it is hurt (loadtests/
# scenarios/standard.toml); prints the summary, leaves report.json and chaos.png in
# reports/demo. Everything it started is stopped at the end, and on Ctrl-C.
demo: deps $(VENV)/.installed
	$(PY) -m loadtests.chaos --scenario loadtests/scenarios/standard.toml --out reports/demo

bench: deps $(VENV)/.installed bench-deps
	$(PY) loadtests/bench.py

# The field's servers for the bench (not needed by the tests): granian's wheel, and
# bjoern, which builds against libev.
bench-deps: $(VENV)/.installed
	dpkg -s libev-dev >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libev-dev; }
	$(PY) -m pip install -q granian bjoern

clean:
	rm -rf $(VENV) build *.egg-info reports server/_accel.*.so
