"""--statsd-host: gunicorn's names and types reach a UDP listener (with the prefix and
the Datadog tags), the master's workers gauge, and a statsd port where nothing listens
neither fails nor slows requests."""

from __future__ import annotations

import http.client
import socket
import time

from conftest import booted, free_port, wait_until


def listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)
    return s


def drain(sock, until, timeout=10.0):
    """Metric lines received until `until(lines)` holds, within `timeout`."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(lines):
        try:
            lines += sock.recv(65536).decode().split("\n")
        except socket.timeout:
            pass
    return lines


def requests(port, n, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(n):
            c.request("GET", path)
            r = c.getresponse()
            r.read()
    finally:
        c.close()


def test_gunicorn_names_types_prefix_and_tags(serve):
    rx = listener()
    port = rx.getsockname()[1]
    s = serve("metrics_app:app", "-w", "2", "--statsd-host", f"127.0.0.1:{port}", "--statsd-prefix", "shop",
              "--dogstatsd-tags", "env:test,team:web")
    booted(s, 2)
    requests(s.port, 3)
    requests(s.port, 1, "/status?404")
    tags = "|#env:test,team:web"
    lines = drain(rx, lambda ls: sum(1 for x in ls if x.startswith("shop.gunicorn.requests:")) >= 5
                  and any(x.startswith("shop.gunicorn.workers:") for x in ls))
    assert f"shop.gunicorn.requests:1|c|@1.0{tags}" in lines
    assert f"shop.gunicorn.request.status.200:1|c|@1.0{tags}" in lines
    assert f"shop.gunicorn.request.status.404:1|c|@1.0{tags}" in lines
    durations = [x for x in lines if x.startswith("shop.gunicorn.request.duration:")]
    assert len(durations) == 5 and all(x.endswith(f"|ms{tags}") for x in durations)
    value = float(durations[0].split(":")[1].split("|")[0])
    assert 0 <= value < 10_000
    assert any(x.startswith("shop.gunicorn.workers:") and x.endswith(f"|g{tags}") for x in lines)


def test_no_prefix_means_gunicorn_names(serve):
    rx = listener()
    s = serve("metrics_app:app", "--statsd-host", f"127.0.0.1:{rx.getsockname()[1]}")
    requests(s.port, 1)
    lines = drain(rx, lambda ls: "gunicorn.requests:1|c|@1.0" in ls)
    assert "gunicorn.requests:1|c|@1.0" in lines


def test_a_dead_statsd_port_does_not_slow_requests(serve):
    dead = free_port()  # nothing listens there: the kernel answers ICMP port unreachable
    slow = serve("metrics_app:app", "--statsd-host", f"127.0.0.1:{dead}")
    plain = serve("metrics_app:app")

    def timed(port):
        t = time.monotonic()
        requests(port, 300)
        return time.monotonic() - t

    timed(slow.port), timed(plain.port)  # warm both
    with_statsd = min(timed(slow.port) for _ in range(3))
    without = min(timed(plain.port) for _ in range(3))
    assert with_statsd < without * 2 + 0.2, (with_statsd, without)
    assert slow.proc.poll() is None
    wait_until(lambda: "Traceback" not in slow.log())
