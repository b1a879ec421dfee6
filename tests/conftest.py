"""Starts real `ferrule` processes on loopback ports for the end-to-end tests."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

APPS = Path(__file__).parent / "apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ferrule exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"ferrule did not listen on {port} within {timeout}s")


@contextlib.contextmanager
def reaped(proc: subprocess.Popen):
    """Kills and reaps ``proc`` on the way out when the test left it running (an
    assertion failed before it stopped the server itself)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Server:
    """A running ferrule process; `log()` is its stderr so far."""

    def __init__(self, target: str, args: list[str], tmp: Path, env: dict | None = None):
        self.port = free_port()
        self.errlog = tmp / f"err-{self.port}.log"
        self.outlog = tmp / f"out-{self.port}.log"
        cmd = [sys.executable, "-m", "ferrule", target, "-b", f"127.0.0.1:{self.port}", "--chdir", str(APPS), *args]
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(cmd, stdout=open(self.outlog, "wb"), stderr=open(self.errlog, "wb"), env=full_env)
        wait_for_port(self.port, self.proc)

    def log(self) -> str:
        return self.errlog.read_text(errors="replace")

    def out(self) -> str:
        return self.outlog.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(target: str, *args: str, env: dict | None = None) -> Server:
        s = Server(target, list(args), tmp_path, env)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def raw(port: int, data: bytes, timeout: float = 5.0, half_close: bool = True) -> bytes:
    """Sends bytes, then reads until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out


def parse(reply: bytes):
    """Splits one HTTP/1.x response into (status, headers dict lower-cased, body)."""
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        decoded, rest = b"", body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2:]
        body = decoded
    return status, headers, body


def read_response(sock):
    """Reads one response with a Content-Length from a keep-alive socket: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body


# Process-model helpers (tests/test_arbiter.py, tests/test_config.py).

def get(port, path="/", timeout=10.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def wait_until(cond, timeout=15.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def children(pid):
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return sorted(out)


def serving(pid):
    """A worker serves once its monitor thread runs (started right before it accepts)."""
    try:
        return any((t / "comm").read_text().strip() == "ferrule-monitor"
                   for t in Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False


def thread_switches(pid):
    """Voluntary context switches of each thread of process pid, keyed by (name, tid)."""
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        status = (t / "status").read_text()
        name = (t / "comm").read_text().strip()
        out[(name, t.name)] = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    return out


def booted(s, n):
    """Waits until the master has n workers, all serving; returns their pids."""
    def ready():
        kids = children(s.proc.pid)
        return len(kids) == n and all(serving(k) for k in kids) and kids
    pids = wait_until(ready)
    assert get(s.port)[0] == 200
    return pids
