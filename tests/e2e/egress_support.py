"""What tests/e2e/test_egress*.py share: listeners that count what reaches them, a real
PostgreSQL for the session, the egress log reader and the record check.

Counting is exact without sleeps: a listener handles what it receives in arrival order, and
`settle()` sends the test's own sentinel (a connection, a datagram) and waits until the
listener has seen it; anything the app sent before its response came back arrived before the
sentinel. So "zero connections" means the kernel never queued one.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import wait_until

#: The record's keys, in this order (ISSUE25 / egress-contract).
KEYS = ["ts", "pid", "request_id", "method", "path", "proto", "addr", "port", "host", "verdict", "rule", "ms"]
REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class Listener:
    """A TCP or UDP listener on a loopback address and a free port that counts what the app
    sends it. TCP `mode`: "http" answers one request with 200 "ok" (for requests, urllib,
    pycurl); "hold" keeps each connection until `release()` then sends b"x" (attribution);
    "close" closes at once."""

    def __init__(self, proto: str = "tcp", addr: str = "127.0.0.1", mode: str = "close"):
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        self.proto, self.addr, self.mode = proto, addr, mode
        self.sock = socket.socket(family, kind)
        self.sock.bind((addr, 0))
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self.accepted = threading.Condition()
        self._sentinels: set = set()
        self._seen: set = set()
        self._held: list[socket.socket] = []
        self._release = threading.Event()
        self._closed = False
        if proto == "tcp":
            self.sock.listen(128)
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                if self.proto == "tcp":
                    conn, peer = self.sock.accept()
                    data = None
                else:
                    data, peer = self.sock.recvfrom(65536)
                    conn = None
            except OSError:
                return
            key = (peer[1], data) if self.proto == "udp" else peer[1]
            with self.accepted:
                if key in self._sentinels:
                    self._seen.add(key)
                else:
                    self.count += 1
                self.accepted.notify_all()
            if conn is not None:
                if key in self._sentinels:
                    conn.close()
                else:
                    threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        with conn:
            conn.settimeout(30)
            try:
                if self.mode == "http":
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(4096)
                        if not chunk:
                            return
                        data += chunk
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                elif self.mode == "hold":
                    self._release.wait(30)
                    conn.sendall(b"x")
            except OSError:
                pass

    def wait_count(self, n: int, timeout: float = 15.0) -> None:
        """Waits until n connections or datagrams have arrived (the app's, not sentinels)."""
        with self.accepted:
            if not self.accepted.wait_for(lambda: self.count >= n, timeout):
                raise AssertionError(f"{self.count} of {n} arrived at {self.addr}:{self.port}")

    def release(self) -> None:
        self._release.set()

    def settle(self) -> int:
        """Sends the test's own sentinel and returns the count once it has arrived."""
        family = socket.AF_INET6 if ":" in self.addr else socket.AF_INET
        if self.proto == "tcp":
            s = socket.socket(family, socket.SOCK_STREAM)
            s.bind((self.addr, 0))
            key = s.getsockname()[1]
            with self.accepted:
                self._sentinels.add(key)
            s.connect((self.addr, self.port))
        else:
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.bind((self.addr, 0))
            key = (s.getsockname()[1], b"sentinel")
            with self.accepted:
                self._sentinels.add(key)
            s.sendto(b"sentinel", (self.addr, self.port))
        with self.accepted:
            ok = self.accepted.wait_for(lambda: key in self._seen, 15)
        s.close()
        assert ok, f"the sentinel did not reach {self.addr}:{self.port}"
        return self.count

    def close(self):
        self.release()
        self.sock.close()


@pytest.fixture
def listeners():
    """listeners(proto="tcp", addr="127.0.0.1", mode="close") -> Listener; all closed after."""
    made = []

    def make(proto="tcp", addr="127.0.0.1", mode="close"):
        made.append(Listener(proto, addr, mode))
        return made[-1]

    yield make
    for lst in made:
        lst.close()


# The egress log ----------------------------------------------------------------------

def records(path: Path) -> list[dict]:
    """Every record of the egress log; each line is one whole JSON object with KEYS in order."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        assert list(rec) == KEYS, line
        out.append(rec)
    return out


def wait_records(path: Path, n: int, where=lambda r: True, timeout: float = 15.0) -> list[dict]:
    """Waits until n records match `where` and returns them (the line of an allowed TCP
    connect may be written just after the app's connect returns)."""
    return wait_until(lambda: (found := [r for r in records(path) if where(r)]) and len(found) >= n and found,
                      timeout=timeout)


def to_port(port: int):
    return lambda r: r["port"] == port


def check(rec: dict, *, pid: int | None = None, request_id=..., method=..., path=..., proto, addr, port,
          host=None, verdict, rule=None, ms_known: bool | None = None, after: float | None = None) -> None:
    """Asserts one record key by key. `...` skips a request field; `ms_known` True wants a
    float >= 0, False wants null, None accepts either (an allowed non-blocking connect)."""
    assert list(rec) == KEYS, rec
    assert isinstance(rec["ts"], float), rec
    if after is not None:
        assert after - 1 <= rec["ts"] <= time.time() + 1, rec
    assert isinstance(rec["pid"], int) and (pid is None or rec["pid"] == pid), rec
    for key, want in (("request_id", request_id), ("method", method), ("path", path)):
        if want is not ...:
            assert rec[key] == want, (key, rec)
    assert (rec["proto"], rec["addr"], rec["port"], rec["host"]) == (proto, addr, port, host), rec
    assert (rec["verdict"], rec["rule"]) == (verdict, rule), rec
    if ms_known is True:
        assert isinstance(rec["ms"], float) and rec["ms"] >= 0, rec
    elif ms_known is False:
        assert rec["ms"] is None, rec
    else:
        assert rec["ms"] is None or (isinstance(rec["ms"], float) and rec["ms"] >= 0), rec


def call(port: int, path: str, headers: dict | None = None, source: str | None = None) -> tuple[int, dict]:
    """GET path from the egress app: (status, its JSON answer)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30,
                                   source_address=(source, 0) if source else None)
    try:
        c.request("GET", path, headers={"Connection": "close", **(headers or {})})
        r = c.getresponse()
        body = r.read()
        return r.status, json.loads(body) if r.status == 200 else {"body": body.decode(errors="replace")}
    finally:
        c.close()


# PostgreSQL ---------------------------------------------------------------------------

def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class Postgres:
    """A cluster made by initdb in a temp dir, listening on 127.0.0.1:port and on a unix
    socket in `sockdir`, trust authentication, user `user`, database `postgres`."""

    def __init__(self):
        initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not (initdb and self.pg_ctl):
            pytest.skip("PostgreSQL is not installed (Debian package postgresql; `make test` installs it)")
        # postgres refuses to run as root: the cluster belongs to the `postgres` user then.
        self.as_user = [] if os.getuid() else ["runuser", "-u", "postgres", "--"]
        self.user = pwd.getpwuid(os.getuid()).pw_name if os.getuid() else "postgres"
        # Not under pytest's tmp dir: /tmp/pytest-of-root is 0700, closed to `postgres`.
        self.root = Path(tempfile.mkdtemp(prefix="ferrule-pg-"))
        self.data, self.sockdir = self.root / "data", self.root / "sock"
        self.sockdir.mkdir()
        os.chmod(self.root, 0o755)
        if os.getuid() == 0:
            for p in (self.root, self.sockdir):
                shutil.chown(p, "postgres", "postgres")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run([initdb, "-D", str(self.data), "-U", self.user, "--auth=trust", "--no-sync",
                   "-E", "UTF8", "--locale=C"])
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                   "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockdir} -c fsync=off",
                   "start"])

    def _run(self, cmd):
        r = subprocess.run(self.as_user + cmd, capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError(f"{cmd[0]} failed: {r.stdout}{r.stderr}")

    def dsn(self, unix: bool = False) -> str:
        host = self.sockdir if unix else "127.0.0.1"
        return f"host={host} port={self.port} user={self.user} dbname=postgres connect_timeout=10"

    def stop(self):
        try:
            self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed (`make test` installs it)")
    pg = Postgres()
    try:
        yield pg
    finally:
        pg.stop()


# Starting the app ---------------------------------------------------------------------

def start(serve, tmp_path: Path, *args: str, env: dict | None = None, name: str = "egress.log"):
    """The egress app with `--egress-log` into tmp/name: (server, log path)."""
    log = tmp_path / name
    return serve("egress_app:app", "--egress-log", str(log), *args, env=env), log


def q(value: str) -> str:
    """A query-string value (a libpq DSN has spaces and '=')."""
    return urllib.parse.quote(value, safe="")
