"""The app behind `--protocol uwsgi` in tests/e2e/test_uwsgi.py: one route per thing
the front server's variables must make of the environ and of the answer."""

import hashlib
import json
import os
import sys
import time

#: The environ keys /env reports, with every HTTP_* and X_* key.
KEYS = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
        "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "HTTPS",
        "REQUEST_URI", "DOCUMENT_ROOT", "wsgi.url_scheme", "X_CUSTOM")


def _read_all(inp):
    chunks = []
    while True:
        block = inp.read(65536)
        if not block:
            return b"".join(chunks)
        chunks.append(block)


def _wait_for(path, limit=10.0):
    """Waits until the test creates `path` (it has read the block before), bounded."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path.endswith("/env"):
        try:
            body = _read_all(environ["wsgi.input"])
        except Exception as exc:  # the test wants to see that the read failed
            print(f"READ FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            raise
        seen = {k: v for k, v in environ.items()
                if k in KEYS or k.startswith(("HTTP_", "X_"))}
        seen["body_len"] = len(body)
        seen["body_sha256"] = hashlib.sha256(body).hexdigest()
        data = json.dumps(seen).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]
    if path == "/stream":
        # Block i goes out, then the app waits for the test to say it arrived.
        start_response("200 OK", [("Content-Type", "text/plain")])

        def blocks():
            for i in range(3):
                yield f"block{i};".encode()
                _wait_for(f"{query}.{i}")
        return blocks()
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(query, "rb"))
    if path == "/error":
        raise RuntimeError("the app failed on purpose")
    data = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
