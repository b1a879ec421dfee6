# The two commands of the README:
#   make run   builds and installs ferrule into .venv and serves examples/hello.py
#   make test  runs every check and test: fmt, clippy, cargo test, pytest (with nginx)
VENV ?= .venv
PY := $(VENV)/bin/python
BIND ?= 127.0.0.1:8000

.PHONY: run test install rust-checks bench bench-smoke

$(VENV)/.ready: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "maturin>=1.5,<2" pytest flask django
	touch $@

install: $(VENV)/.ready
	$(PY) -m pip install -q --force-reinstall --no-deps .

run: install
	$(VENV)/bin/ferrule examples.hello:app --bind $(BIND) --access-logfile -

rust-checks:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

test: rust-checks install
	test -x /usr/sbin/nginx || command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
	{ command -v wrk && command -v ss; } >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk iproute2 >/dev/null; }
	$(PY) -m pytest tests -q -rf
	$(PY) bench/bench.py --smoke

bench: install
	bench/run.sh

bench-smoke: install
	bench/run.sh --smoke
