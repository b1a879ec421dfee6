#!/usr/bin/env bash
# Installs the peers into bench/.cache and runs bench.py (all servers, one run), then
# tls.py (TLS served by ferrule, Granian and gunicorn), then egress.py, then uwsgi.py (behind nginx: ferrule
# --protocol uwsgi against uWSGI and ferrule over HTTP).
# Usage: bench/run.sh [--smoke] [--seconds N] [--repeat N] [--only SERVER,...] [--no-callgrind]
# (uwsgi.py takes --smoke, --seconds, --repeat, --no-callgrind and --out, and ignores the rest;
# tls.py takes --smoke, --seconds, --repeat, --servers and --out, and ignores the rest;
# egress.py, the cost of issue 25's record and policy, takes --smoke, --repeat, --no-callgrind
# and --out, and ignores the rest)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=bench/.cache
if ! command -v wrk >/dev/null || [ ! -e /usr/include/ev.h ] || ! command -v valgrind >/dev/null || ! command -v ss >/dev/null \
    || [ ! -x /usr/sbin/nginx ]; then
  apt-get update -qq && apt-get install -y -qq wrk libev-dev valgrind iproute2 nginx-light >/dev/null
fi
if [ ! -e "$CACHE/venv/.ready" ]; then
  python3 -m venv "$CACHE/venv"
  "$CACHE/venv/bin/pip" install -q --upgrade pip
  "$CACHE/venv/bin/pip" install -q maturin flask gunicorn granian bjoern waitress pyruvate uwsgi
  touch "$CACHE/venv/.ready"
fi
"$CACHE/venv/bin/pip" install -q --force-reinstall --no-deps .
"$CACHE/venv/bin/python" bench/bench.py "$@"
"$CACHE/venv/bin/python" bench/tls.py "$@"
"$CACHE/venv/bin/python" bench/egress.py "$@"
exec "$CACHE/venv/bin/python" bench/uwsgi.py "$@"
