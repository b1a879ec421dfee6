"""A raw PEP 3333 app with one route per feature the server must support.

`app` is the plain app; `validated` is the same app inside wsgiref.validate.
"""

import gc
import io
import json
import os
import sys
import threading
import time
from wsgiref.validate import validator


def _text(start_response, body, status="200 OK", ctype="text/plain"):
    data = body.encode() if isinstance(body, str) else body
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(data)))])
    return [data]


def _read_all(inp):
    chunks = []
    while True:
        block = inp.read(8192)
        if not block:
            return b"".join(chunks)
        chunks.append(block)


class Closing:
    """An iterable whose close() leaves a marker file, to prove close() was called."""

    def __init__(self, chunks, marker):
        self.chunks, self.marker = chunks, marker

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        if self.marker:
            # Written aside, then renamed: a test polling for the file never sees it empty.
            with open(self.marker + ".tmp", "w") as f:
                f.write("closed")
            os.replace(self.marker + ".tmp", self.marker)


def _endless(size):
    block = b"x" * size
    for _ in range(100000):
        yield block


KEPT = []  # request objects an app holds past its request (see /keep)
KEPT_ONE = []  # one part of a request an app holds past it (see /keep-one)
HELD_ENVIRON = []  # an environ an app holds past its request, with a copy (see /hold-environ)


class Text(str):
    """A str subclass: the server does not remember fields made of it."""


# The very same status and header objects on every response (see /fields): the server
# remembers a few of them with their checked bytes. MANY has more than it remembers.
FEW = [("Content-Type", "text/plain"), ("Server", "mine"), ("Date", "then"), ("Content-Length", "2")]
MANY = [(f"X-Field-{i}", f"v{i}") for i in range(12)] + [("Content-Type", "text/plain"), ("Content-Length", "2")]
TWO_LENGTHS = [("Content-Length", "2"), ("Content-Length", "3")]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    inp = environ["wsgi.input"]
    if path == "/hello":
        return _text(start_response, "Hello, World!")
    if path.startswith("/environ"):
        dump = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int))}
        dump["wsgi.version"] = list(environ["wsgi.version"])
        dump["has_input"] = hasattr(inp, "read")
        dump["none_keys"] = [k for k, v in environ.items() if v is None]
        dump["thread"] = threading.get_ident()
        if "sleep" in query:  # blocks, so that requests run on several threads
            time.sleep(0.05)
        if "mutate" in query:  # the next request must not see any of this
            environ.update((k, "mutated") for k, v in dump.items() if isinstance(v, str))
            environ.pop("SERVER_NAME")
        return _text(start_response, json.dumps(dump), ctype="application/json")
    if path == "/keep":  # holds this request's objects; the next /keep checks them
        result = {}
        if KEPT:
            old_input, old_start = KEPT.pop()
            result["reused"] = old_input is inp or old_start is start_response
            for name, call in (("read", lambda: old_input.read(1)),
                               ("start_response", lambda: old_start("200 OK", [("Content-Type", "text/plain")]))):
                try:
                    call()
                    result[name] = "no error"
                except RuntimeError as e:
                    result[name] = str(e)
        KEPT.append((inp, start_response))
        return _text(start_response, json.dumps(result), ctype="application/json")
    if path == "/keep-one":  # holds one object of this request (query: which); the next checks it
        result = {}
        if KEPT_ONE:
            what, old = KEPT_ONE.pop()
            result["reused"] = any(old is o for o in (inp, start_response, environ))
            calls = {"start": lambda: old("200 OK", [("Content-Type", "text/plain")]),
                     "write": lambda: old(b"late"), "environ": lambda: old["wsgi.input"].read(1)}
            try:
                calls[what]()
                result["error"] = "no error"
            except RuntimeError as e:
                result["error"] = str(e)
        write = start_response("200 OK", [("Content-Type", "application/json")])
        KEPT_ONE.append((query, {"start": start_response, "write": write, "environ": environ}[query]))
        return [json.dumps(result).encode()]
    if path == "/poke-later":  # changes this environ after the request, from another thread
        def poke():
            time.sleep(0.2)
            for d in gc.get_objects():
                if type(d) is dict and d.get("HTTP_X_POKE_ME") == "1" and "wsgi.input" in d:
                    d["HTTP_X_POKED"] = "yes"
        threading.Thread(target=poke, daemon=True).start()
        return _text(start_response, "ok")
    if path == "/hold-environ":  # holds this environ; the next request checks the last one
        result = {}
        if HELD_ENVIRON:
            old, copy = HELD_ENVIRON.pop()
            result["reused"] = old is environ
            result["changed"] = sorted(k for k in set(old) | set(copy) if old.get(k) is not copy.get(k))
        HELD_ENVIRON.append((environ, dict(environ)))
        return _text(start_response, json.dumps(result), ctype="application/json")
    if path == "/fields":
        if query == "few":
            start_response("203 Constant Fields", list(FEW))
        elif query == "many":
            start_response("200 OK", list(MANY))
        else:  # not under wsgiref.validate, which wants exact str
            start_response(Text("200 OK"), [(Text("X-Sub"), Text(query)), (Text("Content-Length"), Text("2"))])
        return [b"ok"]
    if path == "/echo":
        return _text(start_response, _read_all(inp), ctype="application/octet-stream")
    if path == "/read-sizes":
        parts = [inp.read(3), inp.read(0), inp.read(4)]
        rest = _read_all(inp)
        after = inp.read(10)
        return _text(start_response, json.dumps([p.decode() for p in parts] + [rest.decode(), after.decode()]))
    if path == "/lines":
        first = inp.readline()
        limited = inp.readline(3)
        rest = inp.readlines()
        return _text(start_response, json.dumps([first.decode(), limited.decode()] + [l.decode() for l in rest]))
    if path == "/iterate":
        return _text(start_response, json.dumps([line.decode() for line in inp]))
    if path == "/stream":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"one,"
            yield b""
            yield b"two,"
            yield b"three"
        return gen()
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written,")
        return [b"returned"]
    if path == "/empty-generator":
        start_response("204 No Content", [])
        return iter(())
    if path == "/file":
        f = open(os.environ["FERRULE_TEST_FILE"], "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 65536)
    if path == "/bytesio":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"in memory " * 1000), 4096)
    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"replaced"]
    if path == "/exc-info-late":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"head is out"
            try:
                raise KeyError("late failure")
            except KeyError:
                start_response("500 Internal Server Error", [], sys.exc_info())
            yield b"never"
        return gen()
    if path == "/status":
        code = query or "404 Not Found"
        return _text(start_response, "status", status=code.replace("+", " "))
    if path == "/sleep":
        time.sleep(float(query or "0.2"))
        return _text(start_response, "slept")
    if path == "/spin":  # computes, holding the GIL
        end = time.monotonic() + float(query or "0.05")
        while time.monotonic() < end:
            pass
        return _text(start_response, "spun")
    if path == "/unicode-header":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Latin", "caf\u00e9")])
        return [b"ok"]
    # Routes below break PEP 3333 on purpose; they are not used under the validator.
    if path == "/error":
        raise ValueError("secret detail that must not reach the client")
    if path == "/error-after":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"partial"
            raise ValueError("failed mid-stream")
        return gen()
    if path == "/bad-header":
        start_response("200 OK", [("X-Bad", "a\r\nInjected: yes")])
        return [b"never"]
    if path == "/hop-by-hop":
        start_response("200 OK", [("Connection", "close")])
        return [b"never"]
    if path == "/seq":  # a list or tuple of several items, or none (query: which)
        start_response("200 OK", [("Content-Type", "text/plain")])
        items = {"list": [b"a", b"bc", b"def"], "tuple": (b"a", b"bc", b"def"), "empty": [], "one": (b"x",)}
        return items[query]
    if path == "/not-bytes":
        start_response("200 OK", [])
        return ["text instead of bytes"]
    if path == "/cl-more":
        start_response("200 OK", [("Content-Length", "3")])
        return [b"abcdef"]
    if path == "/cl-less":
        start_response("200 OK", [("Content-Length", "10")])
        return [b"abc"]
    if path == "/two-lengths":
        start_response("200 OK", list(TWO_LENGTHS))
        return [b"ok"]
    if path == "/twice":
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b"never"]
    if path == "/no-start":
        return [b"never"]
    if path == "/no-headers":
        start_response("200 OK")
        return [b"never"]
    if path == "/endless":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Closing(_endless(65536), os.environ.get("FERRULE_CLOSE_MARKER"))
    if path == "/errors-stream":
        environ["wsgi.errors"].write("app wrote to wsgi.errors\n")
        return _text(start_response, "logged")
    return _text(start_response, "not found", status="404 Not Found")


def factory(greeting="factory"):
    def made(environ, start_response):
        return _text(start_response, greeting)
    return made


validated = validator(app)
not_callable = 42
application = app
