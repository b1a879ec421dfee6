"""No request lost while a worker drains (HUP, max-requests recycling, TTOU, TERM), with
keep-alive clients straight to ferrule and through nginx's upstream keep-alive cache with
POST bodies; and a request over --timeout answered 500 as its worker drains. Real
processes, real signals; every load loop is bounded in requests and in time."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time

import pytest

from conftest import booted, children, free_port, wait_until

from .front_support import Nginx, nginx_conf



class KeepAlive:
    """Client threads, each on one persistent connection, sending requests back to back.
    A connection answered with `Connection: close` is closed and a new one opened, as any
    HTTP/1.1 client does. At most `limit` requests and `seconds` in all.

    A failure is recorded with where it happened: on a connection that had already been
    answered ("existing": a kept-alive connection), or on a new one ("new")."""

    def __init__(self, port, clients=4, body=None, limit=20000, seconds=40.0):
        self.port, self.body, self.limit = port, body, limit
        self.deadline = time.monotonic() + seconds
        self.ok = 0
        self.reconnects = 0
        self.failed: list[tuple[str, float, str]] = []
        self.pids: set[int] = set()
        self.stopping = False
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _more(self):
        with self.lock:
            return (not self.stopping and time.monotonic() < self.deadline
                    and self.ok + len(self.failed) < self.limit)

    def _run(self):
        conn, answered = None, 0
        method = "GET" if self.body is None else "POST"
        while self._more():
            if conn is None:
                conn, answered = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10), 0
            try:
                conn.request(method, "/", body=self.body)
                resp = conn.getresponse()
                data = resp.read()
            except Exception as exc:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.failed.append(("existing" if answered else "new", time.monotonic(), repr(exc)))
                conn.close()
                conn = None
                time.sleep(0.01)  # a refused connect must not spin
                continue
            with self.lock:
                if resp.status == 200:
                    self.ok += 1
                    pid, size = data.split()
                    self.pids.add(int(pid))
                    if int(size) != len(self.body or b""):
                        self.failed.append(("existing" if answered else "new", time.monotonic(),
                                            f"body of {len(self.body or b'')} bytes read as {size!r}"))
                else:
                    self.failed.append(("existing" if answered else "new", time.monotonic(),
                                        f"{resp.status} {data[:200]!r}"))
            if resp.will_close:
                conn.close()
                conn = None
                with self.lock:
                    self.reconnects += 1
            else:
                answered += 1
        if conn is not None:
            conn.close()

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join(timeout=30)
        return self

    def grows(self, n=200):
        """Waits until n more requests were answered."""
        before = self.ok
        wait_until(lambda: self.ok >= before + n, timeout=30)


def assert_no_failure(load, nginx_log=()):
    failed = list(load.failed)
    assert (failed, list(nginx_log)) == ([], []), \
        f"{len(failed)} of {load.ok + len(failed)} requests failed: {failed[:3]}; nginx: {list(nginx_log)[:3]}"


def replaced(s, old, n):
    """Waits until the master has n workers, none of them in `old`; returns them."""
    return wait_until(lambda: (k := children(s.proc.pid)) and len(k) == n and not set(k) & set(old) and k,
                      timeout=30)


def hup_twice(s, load, workers):
    old = booted(s, workers)
    load.grows()
    for _ in range(2):
        s.proc.send_signal(signal.SIGHUP)
        old = replaced(s, old, workers)
        load.grows()
    return old


# ---- keep-alive clients straight to ferrule ----

def test_keep_alive_clients_lose_no_request_over_two_hups(serve):
    s = serve("drain_app:app", "-w", "2")
    load = KeepAlive(s.port, clients=6)
    new = hup_twice(s, load, 2)
    load.stop()
    assert_no_failure(load)
    # Reconnected clients went to the new workers (the kernel picks which one accepts).
    assert set(new) & load.pids
    assert load.reconnects >= 6, "the drained workers did not answer with Connection: close"


def test_keep_alive_clients_lose_no_request_while_workers_recycle(serve):
    s = serve("drain_app:app", "-w", "2", "--max-requests", "50", "--max-requests-jitter", "10")
    booted(s, 2)
    load = KeepAlive(s.port, clients=6)
    # Each worker is replaced after 50-60 requests; run until five have answered.
    wait_until(lambda: len(load.pids) >= 5, timeout=40)
    load.stop()
    assert_no_failure(load)
    assert "max requests" in s.log()


def test_keep_alive_clients_lose_no_request_on_ttou(serve):
    s = serve("drain_app:app", "-w", "3")
    old = booted(s, 3)
    load = KeepAlive(s.port, clients=6)
    load.grows()
    s.proc.send_signal(signal.SIGTTOU)
    wait_until(lambda: len(children(s.proc.pid)) == 2)
    gone = set(old) - set(children(s.proc.pid))
    load.grows()
    load.stop()
    assert_no_failure(load)
    assert gone and gone <= load.pids


def test_term_answers_every_request_sent_on_an_existing_connection(serve):
    s = serve("drain_app:app", "-w", "2", "--graceful-timeout", "10")
    booted(s, 2)
    load = KeepAlive(s.port, clients=6)
    load.grows()
    term_at = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=20) == 0
    load.stop()
    # Once the master closed its listening socket, new connections are refused (or reset
    # while queued in it): those requests never reached a worker and are not failures.
    # Every request sent on a connection that was already open was answered.
    existing = [f for f in load.failed if f[0] == "existing"]
    assert existing == [], f"{len(existing)} requests on open connections failed: {existing[:3]}"
    assert [f for f in load.failed if f[1] < term_at] == []
    assert load.reconnects >= 6, "the drained workers did not answer with Connection: close"


def test_a_kept_alive_connection_idle_during_a_drain_is_answered_then_closed_when_quiet(serve):
    s = serve("drain_app:app", "-w", "1", "--graceful-timeout", "10")
    booted(s, 1)
    idle = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in idle.recv(4096)
    # A request the client is already sending when the drain starts: its first bytes are
    # here before TERM, the rest after. It is answered, with Connection: close.
    busy = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    busy.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in busy.recv(4096)
    busy.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
    worker = children(s.proc.pid)[0]
    stopped = time.monotonic()
    os.kill(worker, signal.SIGTERM)
    time.sleep(0.2)
    busy.sendall(b"hello")
    reply = busy.recv(4096)
    assert reply.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in reply and reply.endswith(b" 5")
    assert busy.recv(4096) == b""
    # The idle one stays open for a quiet period (a client may be picking it right now),
    # then is closed without a response.
    idle.settimeout(10)
    assert idle.recv(4096) == b""
    quiet = time.monotonic() - stopped
    assert 0.5 < quiet < 5, quiet


# ---- behind nginx with upstream keep-alive and POST bodies ----

NGINX_SERVERS = """
    upstream app {{
        server 127.0.0.1:{upstream};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


@pytest.fixture
def nginx(tmp_path):
    """Starts nginx in front of a ferrule port; yields a function taking that port and
    returning nginx's."""
    fronts = []

    def start(upstream: int) -> int:
        port = free_port()
        servers = NGINX_SERVERS.format(upstream=upstream, port=port)
        fronts.append(Nginx(tmp_path, nginx_conf(tmp_path, servers, connections=512), [port]))
        return port

    yield start
    for front in fronts:
        front.stop()


def nginx_errors(tmp_path):
    log = tmp_path / "nginx-error.log"
    return [line for line in log.read_text().splitlines() if "[error]" in line] if log.exists() else []


BODY = bytes(range(256)) * 8  # 2 KiB


def test_nginx_upstream_keep_alive_posts_over_three_hups(serve, nginx, tmp_path):
    s = serve("drain_app:app", "-w", "2")
    old = booted(s, 2)
    load = KeepAlive(nginx(s.port), clients=16, body=BODY)
    load.grows()
    for _ in range(3):
        s.proc.send_signal(signal.SIGHUP)
        old = replaced(s, old, 2)
        load.grows()
    load.stop()
    assert_no_failure(load, nginx_errors(tmp_path))
    assert set(old) & load.pids


def test_nginx_upstream_keep_alive_posts_while_workers_recycle(serve, nginx, tmp_path):
    s = serve("drain_app:app", "-w", "2", "--max-requests", "50", "--max-requests-jitter", "10")
    booted(s, 2)
    load = KeepAlive(nginx(s.port), clients=16, body=BODY)
    wait_until(lambda: len(load.pids) >= 6, timeout=40)
    load.stop()
    assert_no_failure(load, nginx_errors(tmp_path))


def test_nginx_upstream_keep_alive_posts_on_ttou(serve, nginx, tmp_path):
    s = serve("drain_app:app", "-w", "3")
    old = booted(s, 3)
    load = KeepAlive(nginx(s.port), clients=16, body=BODY)
    load.grows()
    s.proc.send_signal(signal.SIGTTOU)
    wait_until(lambda: len(children(s.proc.pid)) == 2)
    gone = set(old) - set(children(s.proc.pid))
    load.grows()
    load.stop()
    assert_no_failure(load, nginx_errors(tmp_path))
    assert gone and gone <= load.pids


# ---- a request over --timeout ----

def test_a_request_over_the_timeout_is_answered_500_when_nothing_was_sent(serve):
    s = serve("drain_app:app", "-w", "1", "--timeout", "2", "--graceful-timeout", "5")
    old = booted(s, 1)
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=15)
    started = time.monotonic()
    conn.request("GET", "/stuck")
    resp = conn.getresponse()
    body = resp.read()
    waited = time.monotonic() - started
    assert (resp.status, resp.getheader("Connection")) == (500, "close"), body
    # The timeout fires once the request is past 2 s (checked every 100 ms), not when
    # the worker has finished draining or the app has woken up (30 s).
    assert 2 <= waited < 4, waited
    assert conn.sock is None or conn.sock.recv(1) == b""
    conn.close()
    replaced(s, old, 1)
    assert "answered 500 to 1 request(s) stuck in the app for more than 2s" in s.log()


def test_a_streamed_answer_over_the_timeout_is_cut(serve):
    s = serve("drain_app:app", "-w", "1", "--timeout", "2", "--graceful-timeout", "1")
    booted(s, 1)
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=15)
    started = time.monotonic()
    sock.sendall(b"GET /stuck-stream HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    waited = time.monotonic() - started
    # The head and first block went out: no 500 can follow them, the connection closes
    # (when the worker has drained: --graceful-timeout 1 after the timeout).
    assert got.startswith(b"HTTP/1.1 200 OK") and b"first;" in got and b"500" not in got, got
    assert b"never;" not in got and not got.endswith(b"0\r\n\r\n"), got
    assert 2 <= waited < 6, waited


def test_a_lone_client_is_never_left_in_the_queue_by_a_stopping_worker(serve, tmp_path):
    """Listeners wake one worker per new connection (EPOLLEXCLUSIVE). A worker that stops
    after the kernel chose it for a connection must still serve that connection, or it
    waits in the queue until some other connection wakes a worker: for a lone client,
    forever. One client, one connection per request, on a unix socket, through HUPs."""
    sock = tmp_path / "lone.sock"
    s = serve("proc:app", "-w", "2", "-b", f"unix:{sock}")
    booted(s, 2)
    slow, done = [], 0
    deadline = time.monotonic() + 40
    for hup in range(8):
        s.proc.send_signal(signal.SIGHUP)
        for _ in range(40):
            if time.monotonic() > deadline:
                break
            t0 = time.monotonic()
            with socket.socket(socket.AF_UNIX) as c:
                c.settimeout(4)
                c.connect(str(sock))
                c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                try:
                    reply = b""
                    while chunk := c.recv(65536):
                        reply += chunk
                except socket.timeout:
                    reply = b""
            if not reply.startswith(b"HTTP/1.1 200"):
                slow.append((hup, round(time.monotonic() - t0, 2), reply[:40]))
            done += 1
            time.sleep(0.01)
    assert done >= 100 and slow == [], f"{len(slow)} of {done} requests not answered: {slow[:5]}"
