# The two commands of the README:
#   make run   builds and installs ferrule into .venv and serves examples/hello.py
#   make test  runs every check and test: fmt, clippy, cargo test, pytest (with nginx and Apache)
# and the pieces they use:
#   make corpus  fetches gunicorn's sdist (pinned version and sha256) and converts its
#                parser corpus into .cache/gunicorn-corpus/gunicorn (tools/gunicorn_corpus.py)
#   make wheel   builds a manylinux wheel for .venv's Python into dist/ (no Rust needed to
#                install it: pip install dist/ferrule-*.whl)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIND ?= 127.0.0.1:8000
CORPUS := .cache/gunicorn-corpus/gunicorn

.PHONY: run test install rust-checks bench bench-smoke corpus wheel

$(VENV)/.ready: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "maturin>=1.5,<2" pytest flask django
	touch $@

install: $(VENV)/.ready
	$(PY) -m pip install -q --force-reinstall --no-deps .

run: install
	$(VENV)/bin/ferrule examples.hello:app --bind $(BIND) --access-logfile -

corpus: $(CORPUS)/index.json

$(CORPUS)/index.json: tools/gunicorn_corpus.py | $(VENV)/.ready
	$(PY) tools/gunicorn_corpus.py --cache $(dir $(CORPUS))

# zig links against an old glibc, so the wheel is manylinux_2_17 whatever this machine
# has; maturin finds it as `python3 -m ziglang` on PATH. Cargo rebuilds only what changed.
$(VENV)/.zig: $(VENV)/.ready
	$(PY) -m pip install -q "ziglang>=0.13,<0.18"
	touch $@

wheel: $(VENV)/.zig
	rm -f dist/ferrule-*-$$($(PY) -c 'import sys; print("cp%d%d" % sys.version_info[:2])')-*.whl
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/maturin build --release --zig \
		--compatibility manylinux_2_17 --interpreter $(PY) --out dist

rust-checks: corpus
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

test: rust-checks install wheel
	test -x /usr/sbin/nginx || command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
	test -x /usr/sbin/apache2 || { apt-get update -qq && apt-get install -y -qq apache2 >/dev/null; }
	{ command -v wrk && command -v ss; } >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk iproute2 >/dev/null; }
	{ command -v haproxy && test -e /usr/lib/nginx/modules/ngx_stream_module.so; } >/dev/null || { apt-get update -qq && apt-get install -y -qq haproxy libnginx-mod-stream >/dev/null; }
	$(PY) -c "import trustme, requests" 2>/dev/null || $(PY) -m pip install -q trustme requests
	{ command -v openssl && command -v curl; } >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl curl >/dev/null; }
	$(PY) -c "import prometheus_client" 2>/dev/null || $(PY) -m pip install -q prometheus_client
	command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; } || true
	# The egress tests (tests/e2e/test_egress*.py): a real PostgreSQL (initdb in a temp dir),
	# psycopg2 (libpq), Flask, requests, and pycurl where it installs from a wheel.
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
	$(PY) -c "import psycopg2, flask, requests" 2>/dev/null || $(PY) -m pip install -q psycopg2-binary flask requests
	$(PY) -c "import pycurl" 2>/dev/null || $(PY) -m pip install -q --only-binary=:all: pycurl || echo "pycurl: no wheel here, its egress tests skip"
	# The syslog tests (tests/e2e/test_syslog.py): a real rsyslogd started in a temp dir.
	command -v rsyslogd >/dev/null || test -x /usr/sbin/rsyslogd || { apt-get update -qq && apt-get install -y -qq rsyslog >/dev/null; }
	# Python logging config tests (tests/e2e/test_logconfig.py): a JSON formatter.
	$(PY) -c "import pythonjsonlogger" 2>/dev/null || $(PY) -m pip install -q python-json-logger
	$(PY) -m pytest tests -q -rf
	$(PY) bench/bench.py --smoke
	$(PY) bench/uwsgi.py --smoke
	$(PY) bench/tls.py --smoke
	$(PY) bench/egress.py --smoke

bench: install
	bench/run.sh

bench-smoke: install
	bench/run.sh --smoke
