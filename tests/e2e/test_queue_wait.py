"""The queue wait counts from when the request's bytes reached the kernel (issue 26, NOTE25
item 4): with --threads 2 and 8 requests of 0.3 s sent at once, the ones that waited in the
socket while both threads were inside the app show it, in %(Q)s, Server-Timing and the
queue histogram; over plain HTTP on new connections, TLS keep-alive connections and uwsgi.
An idle server shows about 0."""

from __future__ import annotations

import concurrent.futures
import http.client
import re
import ssl
import threading

import pytest

from conftest import booted, free_port, wait_until
from .test_metrics import _answers, samples
from .test_uwsgi import ask, nginx_vars

SLEEP = 0.3
N = 8
LINE = re.compile(r"^(\S+) Q=(\d+)$")


def queue_times(s, path):
    """Q (µs) of every access line for `path`."""
    return [int(m.group(2)) for m in map(LINE.match, s.out().splitlines()) if m and m.group(1) == path]


def at_once(fns):
    """Calls each of `fns` on its own thread, all released together; their results."""
    go = threading.Barrier(len(fns))

    def run(fn):
        go.wait(timeout=20)
        return fn()

    with concurrent.futures.ThreadPoolExecutor(len(fns)) as pool:
        return list(pool.map(run, fns, timeout=60))


def http_request(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        r.read()
        return r.getheader("Server-Timing")
    finally:
        c.close()


def queue_ms(field):
    return float(re.match(r"^queue;dur=(\d+\.\d+), ", field).group(1))


def check_waits(qs):
    """Two threads, eight requests of SLEEP: waits of about 0, 0, 1, 1, 2, 2, 3, 3 × SLEEP."""
    qs = sorted(qs)
    assert len(qs) == N, qs
    assert qs[-1] >= 1.8 * SLEEP * 1e6, qs
    assert sum(q >= 0.8 * SLEEP * 1e6 for q in qs) >= 4, qs


def start(serve, *args):
    return serve("metrics_app:app", "--threads", "2", "--access-logfile", "-",
                 "--access-logformat", "%(U)s Q=%(Q)s", *args)


def test_new_connections_waiting_for_a_thread(serve):
    mport = free_port()
    s = start(serve, "--server-timing", "--metrics-bind", f"127.0.0.1:{mport}")
    wait_until(lambda: _answers(mport))
    booted(s, 1)
    fields = at_once([lambda: http_request(s.port, f"/sleep?{SLEEP}")] * N)
    waits = sorted(queue_ms(f) for f in fields)
    assert waits[-1] >= 1.8 * SLEEP * 1e3, waits
    wait_until(lambda: len(queue_times(s, "/sleep")) == N)
    check_waits(queue_times(s, "/sleep"))
    got = samples(mport)
    count = got[("ferrule_request_queue_seconds_count", ())]
    under_half = got[("ferrule_request_queue_seconds_bucket", (("le", "0.5"),))]
    assert count == N + 1 and count - under_half >= 2, got  # booted()'s request, and the 8
    assert got[("ferrule_request_queue_seconds_sum", ())] >= 3 * SLEEP
    # Idle: the next request waits for nothing.
    assert queue_ms(http_request(s.port, "/idle")) < 100
    wait_until(lambda: queue_times(s, "/idle"))
    assert queue_times(s, "/idle")[0] < 100_000


def test_tls_keep_alive_connections_waiting_for_a_thread(serve, tmp_path):
    trustme = pytest.importorskip("trustme", reason="pip install trustme (make test does)")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    s = start(serve, "--certfile", str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "key.pem"))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    wait_until(lambda: _tls_answers(s.port, ctx))
    # Handshakes done while the server is idle: the 8 requests then come on open connections.
    conns = [http.client.HTTPSConnection("127.0.0.1", s.port, context=ctx, timeout=20) for _ in range(N)]
    try:
        for c in conns:
            c.request("GET", "/warm")
            c.getresponse().read()

        def one(c):
            def call():
                c.request("GET", f"/sleep?{SLEEP}")
                c.getresponse().read()
            return call

        at_once([one(c) for c in conns])
    finally:
        for c in conns:
            c.close()
    wait_until(lambda: len(queue_times(s, "/sleep")) == N)
    check_waits(queue_times(s, "/sleep"))
    assert max(queue_times(s, "/warm")) < 100_000


def _tls_answers(port, ctx):
    try:
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
        c.request("GET", "/")
        return c.getresponse().status == 200
    except OSError:
        return False


def test_uwsgi_requests_waiting_for_a_thread(serve):
    s = start(serve, "--protocol", "uwsgi")
    wait_until(lambda: b"200" in ask(s.port, nginx_vars(uri="/up")))
    at_once([lambda: ask(s.port, nginx_vars(uri=f"/sleep?{SLEEP}"))] * N)
    wait_until(lambda: len(queue_times(s, "/sleep")) == N)
    check_waits(queue_times(s, "/sleep"))
    assert queue_times(s, "/up")[0] < 100_000
