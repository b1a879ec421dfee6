"""A Flask app (no Django) whose routes reach out the ways real apps do, for the egress tests
(tests/e2e/test_egress*.py): the `socket` module, requests, urllib.request, pycurl, a UDP
SysLogHandler, psycopg2 (libpq, native), and libc `connect(2)` through ctypes.

Every route answers 200 with JSON: the request's `ferrule.request_id`, the worker's pid, the
path, and one result per attempt: "ok", "PermissionError" (EACCES, as a denial gives) or the
error's text. The request itself always answers: a denial is the app's to handle.

A thread started at import takes jobs from `/bg` (so a connect made while a request is in
flight, by a thread that is not serving it) and, with EGRESS_IMPORT_PORT set, connects once
to 127.0.0.1:that port as soon as it starts.
"""

import ctypes
import errno
import logging
import logging.handlers
import os
import queue
import socket
import threading
import urllib.request

from flask import Flask, jsonify, request

app = Flask(__name__)
libc = ctypes.CDLL(None, use_errno=True)


def destination(spec):
    """'127.0.0.1:80', '[::1]:80' or 'localhost:80' -> (host, port)."""
    host, _, port = spec.rpartition(":")
    return host.strip("[]"), int(port)


def tcp_connect(spec, nonblocking=False):
    """A blocking connect (ferrule performs it on a pool thread and times it), or with
    `nonblocking` a Python timeout, which makes the socket non-blocking: the connect
    returns EINPROGRESS and Python waits for it (ferrule watches it for its `ms`)."""
    host, port = destination(spec)
    try:
        # A name is resolved here, IPv4 only (so "localhost" is one attempt whatever
        # /etc/hosts says about ::1); the resolution is what gives the record its host.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        addr = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0][4]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            if nonblocking:
                s.settimeout(10)
            s.connect(addr)
        return "ok"
    except PermissionError:
        return "PermissionError"
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def answer(results, **extra):
    return jsonify(request_id=request.environ.get("ferrule.request_id"),
                   has_request_id="ferrule.request_id" in request.environ,
                   pid=os.getpid(), path=request.path, results=results, **extra)


@app.get("/")
def index():
    return "egress app"  # what conftest.booted() asks for


@app.get("/env")
def env():
    return answer([])


@app.get("/socket")
def by_socket():
    """Connects to each `to` in order (repeats allowed); nb=1: non-blocking sockets."""
    nonblocking = request.args.get("nb") == "1"
    return answer([tcp_connect(spec, nonblocking) for spec in request.args.getlist("to")])


@app.get("/udp")
def udp():
    """sendto each `to`; with connected=1, connect then send (judged at the connect);
    with via=sendmsg, sendmsg with the address and two buffers."""
    out = []
    for spec in request.args.getlist("to"):
        host, port = destination(spec)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                if request.args.get("connected") == "1":
                    s.connect((host, port))
                    s.send(b"hello")
                elif request.args.get("via") == "sendmsg":
                    s.sendmsg([b"hel", b"lo"], [], 0, (host, port))
                else:
                    s.sendto(b"hello", (host, port))
            out.append("ok")
        except PermissionError:
            out.append("PermissionError")
        except OSError as e:
            out.append(f"{type(e).__name__}: {e}")
    return answer(out)


@app.get("/syslog")
def syslog():
    """A remote syslog handler over UDP, as apps configure one."""
    handler = logging.handlers.SysLogHandler(address=("127.0.0.1", int(request.args["port"])))
    logger = logging.getLogger(f"egress-syslog-{request.args['port']}")
    logger.propagate = False
    logger.addHandler(handler)
    failed = []
    handler.handleError = lambda record: failed.append(True)  # logging swallows send errors
    try:
        logger.warning("egress test")
    finally:
        logger.removeHandler(handler)
        handler.close()
    return answer(["error" if failed else "ok"])


def _permission_denied(exc):
    """True when a PermissionError is anywhere in the exception's chain or text (requests
    wraps it twice)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, PermissionError) or "[Errno 13] Permission denied" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__ or getattr(seen, "reason", None)
        if not isinstance(seen, BaseException):
            return False
    return False


@app.get("/requests")
def by_requests():
    import requests
    try:
        return answer([requests.get(request.args["url"], timeout=10).text])
    except requests.RequestException as e:
        return answer(["PermissionError" if _permission_denied(e) else f"{type(e).__name__}: {e}"])


@app.get("/urllib")
def by_urllib():
    try:
        with urllib.request.urlopen(request.args["url"], timeout=10) as r:
            return answer([r.read().decode()])
    except OSError as e:  # URLError is an OSError; its reason is the socket's error
        return answer(["PermissionError" if _permission_denied(e) else f"{type(e).__name__}: {e}"])


@app.get("/pycurl")
def by_pycurl():
    import io

    import pycurl
    body = io.BytesIO()
    c = pycurl.Curl()
    try:
        c.setopt(pycurl.URL, request.args["url"])
        c.setopt(pycurl.WRITEDATA, body)
        c.setopt(pycurl.TIMEOUT, 10)
        c.perform()
        return answer([body.getvalue().decode()])
    except pycurl.error as e:
        return answer([f"pycurl.error: {e.args[1]}"])
    finally:
        c.close()


@app.get("/pg")
def by_psycopg2():
    import psycopg2
    try:
        conn = psycopg2.connect(request.args["dsn"])
    except psycopg2.OperationalError as e:
        return answer([f"OperationalError: {e}"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 41 + 1")
            return answer(["ok" if cur.fetchone()[0] == 42 else "wrong answer"])
    finally:
        conn.close()


class SockaddrIn(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16), ("addr", ctypes.c_ubyte * 4),
                ("zero", ctypes.c_ubyte * 8)]


class SockaddrIn6(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16), ("flowinfo", ctypes.c_uint32),
                ("addr", ctypes.c_ubyte * 16), ("scope_id", ctypes.c_uint32)]


def _libc_connect(host, port):
    """libc connect(2) with a sockaddr built by hand: no Python socket call sees it.
    Returns (fd, errno): fd is the caller's to close."""
    if ":" in host:
        family, sa = socket.AF_INET6, SockaddrIn6()
        sa.addr[:] = list(socket.inet_pton(socket.AF_INET6, host))
    else:
        family, sa = socket.AF_INET, SockaddrIn()
        sa.addr[:] = list(socket.inet_aton(host))
    sa.family, sa.port = family, socket.htons(port)
    fd = libc.socket(family, socket.SOCK_STREAM, 0)
    rc = libc.connect(fd, ctypes.byref(sa), ctypes.sizeof(sa))
    return fd, (ctypes.get_errno() if rc else 0)


@app.get("/ctypes")
def by_ctypes():
    fd, err = _libc_connect(*destination(request.args["to"]))
    libc.close(fd)
    return answer(["ok" if err == 0 else "PermissionError" if err == errno.EACCES else f"errno {err}"])


@app.get("/race")
def race():
    """n libc connects with one sockaddr whose port another thread flips between `allow`
    and `deny` as fast as it can: a check that read the address and let the kernel read it
    again could pass a denied port. Counts the outcomes."""
    ports = [socket.htons(int(request.args["allow"])), socket.htons(int(request.args["deny"]))]
    sa = SockaddrIn()
    sa.family, sa.port = socket.AF_INET, ports[0]
    sa.addr[:] = [127, 0, 0, 1]
    stop = threading.Event()

    def flip():
        i = 0
        while not stop.is_set():
            i ^= 1
            sa.port = ports[i]

    flipper = threading.Thread(target=flip)
    flipper.start()
    outcomes: dict = {}
    try:
        for _ in range(int(request.args["n"])):
            fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
            rc = libc.connect(fd, ctypes.byref(sa), ctypes.sizeof(sa))
            err = ctypes.get_errno() if rc else 0
            libc.close(fd)
            key = "ok" if rc == 0 else errno.errorcode.get(err, str(err))
            outcomes[key] = outcomes.get(key, 0) + 1
    finally:
        stop.set()
        flipper.join()
    return answer([], outcomes=outcomes)


@app.get("/counts")
def counts():
    import ferrule
    return answer([list(c) for c in ferrule.egress_counts()])


@app.get("/hold/<int:n>")
def hold(n):
    """Connects to 127.0.0.1:port (with `native=1` through libc) and waits for the
    listener's byte: the test holds every request's connection until all are in flight."""
    port = int(request.args["port"])
    if request.args.get("native") == "1":
        fd, err = _libc_connect("127.0.0.1", port)
        if err:
            libc.close(fd)
            return answer([f"errno {err}"])
        s = socket.socket(fileno=fd)
    else:
        s = socket.create_connection(("127.0.0.1", port))  # blocking: its record has its ms
    with s:
        s.settimeout(30)
        got = s.recv(1)
    return answer(["ok" if got == b"x" else repr(got)])


# The thread started at import -------------------------------------------------------

_jobs: "queue.Queue[tuple[str, queue.Queue]]" = queue.Queue()


def _background():
    if os.environ.get("EGRESS_IMPORT_PORT"):
        tcp_connect(f"127.0.0.1:{os.environ['EGRESS_IMPORT_PORT']}")
    while True:
        spec, reply = _jobs.get()
        reply.put(tcp_connect(spec))


threading.Thread(target=_background, name="egress-app-background", daemon=True).start()


@app.get("/bg")
def background():
    reply: queue.Queue = queue.Queue()
    _jobs.put((request.args["to"], reply))
    return answer([reply.get(timeout=30)])
