"""The apps every server is measured with (one module, one callable per scenario)."""

import os
import time

HELLO = b"Hello, World!"
CHUNK = b"x" * 4096
FILE = os.environ.get("BENCH_FILE", "/tmp/ferrule-bench-1mb.bin")


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def sleep(environ, start_response):
    time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def echo(environ, start_response):
    n = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(n)
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
    return [body]


def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return (CHUNK for _ in range(25))


def file(environ, start_response):
    f = open(FILE, "rb")
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(os.fstat(f.fileno()).st_size))])
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is None:  # optional in PEP 3333 (Granian has none): its own fallback, blocks read in turn
        return iter(lambda: f.read(65536), b"")
    return wrapper(f, 65536)


try:
    from flask import Flask

    flask_app = Flask(__name__)

    @flask_app.get("/")
    def _index():
        return "Hello, World!"
except ImportError:  # the bench installs Flask; tests of the harness may not
    flask_app = None


def hello_dynamic(environ, start_response):
    """hello with its headers built per call (a new list and str(len(body)) each time),
    as most hand-written apps do: the constant-tuple fast paths do not apply."""
    body = HELLO
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
