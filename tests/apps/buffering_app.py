"""Routes for request buffering (tests/e2e/test_buffering.py)."""

import hashlib
import json
import os
import time


def _json(start_response, value):
    data = json.dumps(value).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def _spill_files():
    """Deleted files this process has open in $TMPDIR (a spilled body's file)."""
    tmp = os.environ.get("TMPDIR", "/tmp")
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(tmp) and target.endswith("(deleted)"):
            found.append(target)
    return found


def app(environ, start_response):
    path = environ["PATH_INFO"]
    inp = environ["wsgi.input"]
    if path in ("/", "/hello"):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]
    if path == "/sha256":  # hashes the body read in blocks, says where it came from
        spilled = _spill_files()
        h, n = hashlib.sha256(), 0
        while block := inp.read(65536):
            h.update(block)
            n += len(block)
        return _json(start_response, {"sha256": h.hexdigest(), "length": n, "spilled": spilled,
                                      "content_length": environ.get("CONTENT_LENGTH")})
    if path == "/echo":
        n = environ.get("CONTENT_LENGTH")
        body = inp.read(int(n)) if n else inp.read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/first-byte":  # answers after one byte of the body: shows when the app ran
        first = inp.read(1)
        return _json(start_response, {"first": first.decode("latin-1"), "at": time.time()})
    if path == "/lines":
        return _json(start_response, [line.decode() for line in inp])
    start_response("404 Not Found", [("Content-Length", "0")])
    return []
