"""An app for tests/test_gunicorn_compat.py: answers with wsgi.url_scheme; /print
writes a line to stdout and one to stderr."""

import sys


def app(environ, start_response):
    if environ["PATH_INFO"] == "/print":
        print("printed-by-the-app", flush=True)
        print("to-stderr-by-the-app", file=sys.stderr, flush=True)
    body = environ["wsgi.url_scheme"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
