"""A destination that does not answer must not hold up the worker's other connects: every
blocking connect is performed by its own pool thread, not queued behind stalled ones."""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import wait_until

APP = """
import socket, struct, time

def app(environ, start_response):
    s = socket.socket()
    # A blocking connect (no Python timeout), bounded by the kernel after 4 s.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 4, 0))
    started = time.monotonic()
    try:
        s.connect(("127.0.0.1", int(environ["QUERY_STRING"])))
        result = "connected"
    except OSError as e:
        result = type(e).__name__
    finally:
        s.close()
    body = f"{result} {time.monotonic() - started:.3f}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def get(port: int, query: str) -> str:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", f"/?{query}")
        return c.getresponse().read().decode()
    finally:
        c.close()


def syn_sent(port: int) -> int:
    out = subprocess.run(["ss", "-Htn", "state", "syn-sent", f"dport = :{port}"], capture_output=True,
                         text=True, timeout=10).stdout
    return len(out.splitlines())


def test_connects_stalled_on_one_destination_do_not_hold_up_another(serve, tmp_path):
    if shutil.which("ss") is None:
        pytest.fail("ss is not installed (make test installs iproute2)")
    (tmp_path / "stall_app.py").write_text(APP)
    # A port whose accept queue is full: further SYNs are dropped, connects wait.
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(0)
    fillers = [socket.socket() for _ in range(3)]
    for f in fillers:
        f.setblocking(False)
        f.connect_ex(stalled.getsockname())
    healthy = socket.socket()
    healthy.bind(("127.0.0.1", 0))
    healthy.listen(64)
    try:
        s = serve("stall_app:app", "--pythonpath", str(tmp_path), "-w", "1", "--threads", "32",
                  "--egress-log", str(tmp_path / "egress.log"))
        port = stalled.getsockname()[1]
        waiting = [threading.Thread(target=get, args=(s.port, str(port))) for _ in range(20)]
        for t in waiting:
            t.start()
        # More connects stalled at once than the pool once had threads (16).
        wait_until(lambda: syn_sent(port) >= 17, timeout=10)
        started = time.monotonic()
        answer = get(s.port, str(healthy.getsockname()[1]))
        assert answer.startswith("connected") and time.monotonic() - started < 2, answer
        for t in waiting:
            t.join(30)
    finally:
        for f in fillers:
            f.close()
        stalled.close()
        healthy.close()
