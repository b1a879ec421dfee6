"""Answers of a chosen size with checkable bytes, for the response-buffering tests."""

import hashlib
import threading


def pattern(n: int) -> bytes:
    """n bytes that differ per position (a lost or repeated block changes the digest)."""
    block = b"".join(i.to_bytes(4, "big") for i in range(16384))  # 64 KiB, no repeats
    return (block * (n // len(block) + 1))[:n]


def digest(n: int) -> str:
    return hashlib.sha256(pattern(n)).hexdigest()


_bodies: dict = {}


def _body(n: int) -> bytes:
    if n not in _bodies:
        _bodies[n] = pattern(n)
    return _bodies[n]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = dict(p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)
    n = int(query.get("n", "0"))
    if path == "/list":  # one complete answer, its length known
        body = _body(n)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path == "/stream":  # a generator: its blocks go out as they come (chunked)
        body = _body(n)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (body[i:i + 65536] for i in range(0, len(body), 65536))
    if path == "/threads":  # how many threads the worker runs
        body = str(threading.active_count()).encode()
    else:
        body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
