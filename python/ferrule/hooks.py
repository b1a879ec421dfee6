"""The objects hooks receive, with gunicorn's attribute names: the ``worker`` (also the
master's record of it), and the ``req`` and ``resp`` of pre_request/post_request, with
the wrapper that calls those two around the app."""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from ferrule.log import Log


class Worker:
    """The ``worker`` argument of hooks (gunicorn's attribute names)."""

    def __init__(self, age: int, cfg: Any, ppid: int):
        self.age = age
        self.cfg = cfg
        self.ppid = ppid
        self.pid: Optional[int] = None
        self.log = Log()
        self.booted = False
        self.alive = True
        self.wsgi: Optional[Callable] = None
        # Master-side bookkeeping.
        self.pipe_r = -1
        self.pipe_w = -1
        self.last_beat = time.monotonic()
        self.retiring = False
        self.term_at: Optional[float] = None
        #: Signals the master sent it.
        self.sent: set = set()
        self.replaces: Optional[int] = None

    def __repr__(self) -> str:
        return f"<Worker pid={self.pid} age={self.age}>"


class Request:
    """The ``req`` argument of pre_request/post_request, built from the environ."""

    def __init__(self, environ: dict):
        self.method = environ.get("REQUEST_METHOD", "")
        self.path = environ.get("PATH_INFO", "")
        self.query = environ.get("QUERY_STRING", "")
        self.uri = environ.get("RAW_URI") or (self.path + ("?" + self.query if self.query else ""))
        addr, port = environ.get("REMOTE_ADDR", ""), environ.get("REMOTE_PORT", "")
        #: (host, port) for TCP, "" for a Unix socket, as gunicorn's ``peer_addr``.
        self.peer_addr = self.remote_addr = (addr, int(port)) if port.isdigit() else addr
        self.scheme = environ.get("wsgi.url_scheme", "http")
        proto = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        self.version = tuple(int(x) for x in proto[5:].split(".")) if proto.startswith("HTTP/") else (1, 1)
        self.headers = [(k[5:].replace("_", "-"), v) for k, v in environ.items() if k.startswith("HTTP_")]
        if "CONTENT_TYPE" in environ:
            self.headers.append(("CONTENT-TYPE", environ["CONTENT_TYPE"]))
        if "CONTENT_LENGTH" in environ:
            self.headers.append(("CONTENT-LENGTH", environ["CONTENT_LENGTH"]))


class Response:
    """The ``resp`` argument of post_request."""

    def __init__(self):
        self.status: Optional[str] = None
        self.headers: list = []
        self.sent = 0

    @property
    def status_code(self) -> Optional[int]:
        return int(self.status.split(None, 1)[0]) if self.status else None


class _AfterClose:
    """Iterates the app's response and runs `after` once it is closed."""

    def __init__(self, result, resp: Response, after: Callable[[], None]):
        self._result, self._resp, self._after = result, resp, after

    def __iter__(self):
        for block in self._result:
            self._resp.sent += len(block)
            yield block

    def close(self):
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._after()


def with_request_hooks(app: Callable, worker: Worker, pre, post) -> Callable:
    """Wraps the app only when pre_request or post_request is set, so the fast paths
    (lists, sendfile) stay untouched otherwise. An exception in pre_request fails the
    request (500); one in post_request is logged (gunicorn's handling)."""

    def wrapped(environ, start_response):
        req = Request(environ)
        if pre is not None:
            pre(worker, req)
        resp = Response()

        def sr(status, headers, exc_info=None):
            resp.status, resp.headers = status, headers
            return start_response(status, headers, exc_info)

        result = app(environ, sr)
        if post is None:
            return result

        def after():
            try:
                post(worker, req, environ, resp)
            except Exception:
                worker.log.exception("Exception in post_request hook")

        return _AfterClose(result, resp, after)

    return wrapped
