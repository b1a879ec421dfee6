"""--metrics-bind: /metrics parsed by prometheus_client (and promtool where Debian's
prometheus package provides it), /healthz and /readyz, counters exact across four
workers after keep-alive and new-connection requests, a --max-requests replacement, a
HUP and a crash, and the reasons replacements are counted under."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess

import pytest

from conftest import booted, children, free_port, reaped, wait_until

parser = pytest.importorskip("prometheus_client.parser", reason="pip install prometheus_client (make test does)")


def fetch(port, path="/metrics", method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read().decode()
    finally:
        c.close()


def samples(port):
    """{(name, ((label, value), ...)): value} of one scrape, parsed by prometheus_client."""
    status, ctype, text = fetch(port)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    out = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def requests_total(port, **labels):
    want = set(labels.items())
    return sum(v for (name, ls), v in samples(port).items()
               if name == "ferrule_requests_total" and want <= set(ls))


def exactly(port, n):
    """The requests counted reach n, and stay there. A request is counted by its
    worker right after its answer went out, so a client may read the answer a few
    microseconds before the count moves."""
    wait_until(lambda: requests_total(port) >= n, timeout=5)
    assert requests_total(port) == n


def keep_alive(port, n, path="/", status=200):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(n):
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            assert r.status == status
    finally:
        c.close()


def new_connections(port, n, path="/"):
    for _ in range(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        r.read()
        c.close()


def start(serve, *args):
    mport = free_port()
    s = serve("metrics_app:app", "--metrics-bind", f"127.0.0.1:{mport}", *args)
    wait_until(lambda: _answers(mport))
    return s, mport


def _answers(port):
    try:
        return fetch(port, "/healthz")[0] == 200
    except OSError:
        return False


def test_metrics_parse_and_probes_answer(serve, tmp_path):
    s, mport = start(serve, "-w", "2")
    booted(s, 2)
    keep_alive(s.port, 5)
    keep_alive(s.port, 2, "/status?404", 404)
    got = samples(mport)
    names = {name for name, _ in got}
    for family in ("ferrule_requests_total", "ferrule_request_duration_seconds_bucket",
                   "ferrule_request_queue_seconds_bucket", "ferrule_requests_in_flight", "ferrule_app_threads",
                   "ferrule_connections", "ferrule_workers", "ferrule_worker_restarts_total",
                   "ferrule_bytes_sent_total", "ferrule_bytes_received_total"):
        assert family in names, family
    # booted() sent one request too.
    exactly(mport, 8)
    got = samples(mport)
    assert got[("ferrule_requests_total", (("method", "GET"), ("status", "200")))] == 6
    assert got[("ferrule_requests_total", (("method", "GET"), ("status", "404")))] == 2
    assert got[("ferrule_request_duration_seconds_count", ())] == 8
    assert got[("ferrule_workers", ())] == 2
    assert got[("ferrule_bytes_received_total", ())] > 8 * 16
    assert fetch(mport, "/healthz")[0] == 200
    assert fetch(mport, "/readyz")[0] == 200
    assert fetch(mport, "/nope")[0] == 404
    assert fetch(mport, "/metrics", "POST")[0] == 405
    assert "Metrics at: http://127.0.0.1:" in s.log()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool absent (Debian package prometheus); prometheus_client parsed the text")
    text = fetch(mport)[2]
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    # promtool lints names too; only errors fail the format.
    assert r.returncode == 0 or "error" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr


def test_rejected_requests_are_counted_apart(serve):
    s, mport = start(serve)
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    c.putrequest("GET", "/")
    c.putheader("X-Big", "x" * 10000)
    c.endheaders()
    assert c.getresponse().status == 431
    c.close()
    got = samples(mport)
    assert got[("ferrule_rejected_requests_total", (("status", "431"),))] == 1
    assert requests_total(mport) == 0


def test_counts_are_exact_across_four_workers_and_their_replacements(serve):
    s, mport = start(serve, "-w", "4", "--max-requests", "40")
    pids = booted(s, 4)
    sent = 1
    for _ in range(4):
        keep_alive(s.port, 25)
        new_connections(s.port, 15)
        sent += 40
    # 161 requests over 4 workers of at most 40 (plus jitter 0): some were replaced.
    wait_until(lambda: set(children(s.proc.pid)) - set(pids), timeout=30)
    exactly(mport, sent)
    old = booted(s, 4)
    sent += 1
    s.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(k := children(s.proc.pid)) == 4 and not set(k) & set(old), timeout=30)
    keep_alive(s.port, 10)
    sent += 10
    exactly(mport, sent)
    got = samples(mport)
    restarts = {dict(ls)["reason"]: v for (n, ls), v in got.items() if n == "ferrule_worker_restarts_total"}
    assert restarts["max-requests"] >= 1
    assert restarts["reload"] >= 4
    assert restarts["crash"] == 0
    assert got[("ferrule_request_duration_seconds_count", ())] == sent


def test_a_crash_is_counted_and_its_requests_kept(serve):
    s, mport = start(serve, "-w", "2")
    booted(s, 2)
    keep_alive(s.port, 7)
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    c.request("GET", "/crash")
    with pytest.raises((http.client.HTTPException, OSError)):
        c.getresponse()
    c.close()
    wait_until(lambda: samples(mport)[("ferrule_worker_restarts_total", (("reason", "crash"),))] == 1)
    exactly(mport, 8)


def test_readyz_is_503_while_no_worker_accepts(serve, tmp_path):
    # post_fork waits while the file `hold` exists: the master lives (healthz 200)
    # while no worker accepts (readyz 503).
    hold = tmp_path / "hold"
    hold.write_text("")
    conf = tmp_path / "hold.conf.py"
    conf.write_text(f"import os, time\n"
                    f"def post_fork(server, worker):\n"
                    f"    deadline = time.monotonic() + 30\n"
                    f"    while os.path.exists({str(hold)!r}) and time.monotonic() < deadline:\n"
                    f"        time.sleep(0.05)\n")
    mport = free_port()
    s = serve("metrics_app:app", "-c", str(conf), "--metrics-bind", f"127.0.0.1:{mport}")
    wait_until(lambda: _answers(mport))
    assert fetch(mport, "/readyz")[0] == 503
    assert fetch(mport, "/healthz")[0] == 200
    hold.unlink()
    wait_until(lambda: fetch(mport, "/readyz")[0] == 200)
    # Its worker stops; the replacement is held in post_fork: nothing accepts.
    hold.write_text("")
    (worker,) = children(s.proc.pid)
    os.kill(worker, signal.SIGTERM)
    wait_until(lambda: fetch(mport, "/readyz")[0] == 503, timeout=30)
    assert fetch(mport, "/healthz")[0] == 200
    hold.unlink()
    wait_until(lambda: fetch(mport, "/readyz")[0] == 200, timeout=30)


def test_unix_bind_and_bad_values(serve, tmp_path):
    path = tmp_path / "m.sock"
    s = serve("metrics_app:app", "--metrics-bind", f"unix:{path}")
    import socket as so
    wait_until(path.exists)
    with so.socket(so.AF_UNIX) as c:
        c.settimeout(10)
        c.connect(str(path))
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"ok\n")
    s.stop()
    r = subprocess.run([os.sys.executable, "-m", "ferrule", "metrics_app:app", "--metrics-bind", "9100",
                        "--check-config"], capture_output=True, text=True, timeout=60,
                       cwd=os.path.join(os.path.dirname(__file__), "..", "apps"))
    assert r.returncode == 2 and "metrics-bind" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def restarts(port):
    return {dict(ls)["reason"]: v for (n, ls), v in samples(port).items() if n == "ferrule_worker_restarts_total"}


def test_timeout_and_memory_replacements_are_counted_by_reason(serve):
    s, mport = start(serve, "--timeout", "1", "--graceful-timeout", "1")
    booted(s, 1)
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=20)
    c.request("GET", "/sleep?5")
    assert c.getresponse().status == 500
    c.close()
    wait_until(lambda: restarts(mport)["timeout"] == 1, timeout=20)
    # Any worker is over 1 MB: each asks to be replaced within its first second.
    s2, mport2 = start(serve, "--max-worker-memory", "1")
    wait_until(lambda: restarts(mport2)["memory"] >= 1, timeout=20)
    assert restarts(mport2)["crash"] == 0


def test_pipelined_requests_are_each_counted_with_a_duration(serve):
    import socket
    s, mport = start(serve)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4 + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 5
    exactly(mport, 5)
    got = samples(mport)
    assert got[("ferrule_request_duration_seconds_count", ())] == 5
    assert got[("ferrule_request_queue_seconds_count", ())] == 5


RUN_SCRIPT = """
import ferrule

def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]

ferrule.run(app, bind="127.0.0.1:{port}", metrics_bind="127.0.0.1:{metrics}")
"""


def test_ferrule_run_serves_metrics_as_one_worker(tmp_path):
    import sys
    from conftest import wait_for_port
    port, metrics = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-c", RUN_SCRIPT.format(port=port, metrics=metrics)])
    with reaped(proc):
        wait_for_port(port, proc)
        wait_for_port(metrics, proc)
        keep_alive(port, 3)
        exactly(metrics, 3)
        assert samples(metrics)[("ferrule_workers", ())] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
