"""ferrule_egress_attempts_total in /metrics (issue 26, the egress issue's metrics hook):
connects made by two workers, and by workers --max-requests replaced since, sum exactly in
one scrape parsed by prometheus_client, labelled host:port when the app resolved a name and
addr:port when it gave a literal address, by verdict; a server without egress shows none."""

from __future__ import annotations

import time

import pytest

from conftest import booted, children, free_port, wait_until
from .egress_support import call, listeners  # noqa: F401  (a fixture)

parser = pytest.importorskip("prometheus_client.parser", reason="pip install prometheus_client (make test does)")

from .test_metrics import _answers, samples  # noqa: E402  (after the skip: it needs the parser too)


def egress_series(mport):
    return {(dict(ls)["proto"], dict(ls)["destination"], dict(ls)["verdict"]): v
            for (name, ls), v in samples(mport).items() if name == "ferrule_egress_attempts_total"}


def test_egress_counts_are_exact_across_two_workers_and_their_replacements(serve, listeners):
    allowed, denied = listeners(mode="close"), listeners(mode="close")
    mport = free_port()
    s = serve("egress_app:app", "-w", "2", "--max-requests", "12", "--metrics-bind", f"127.0.0.1:{mport}",
              "--egress-deny", f"127.0.0.1:{denied.port}")
    wait_until(lambda: _answers(mport))
    first = set(booted(s, 2))
    pids, sent = set(), 0
    # New connections each: the kernel spreads them over both workers; a worker past 12
    # requests is replaced (checked on the master's tick). Bounded in count and time.
    deadline = time.monotonic() + 30
    while sent < 400 and time.monotonic() < deadline and (len(pids) < 3 or not first <= pids):
        status, got = call(s.port, f"/socket?to=localhost:{allowed.port}&to=127.0.0.1:{denied.port}")
        assert status == 200 and got["results"] == ["ok", "PermissionError"], got
        pids.add(got["pid"])
        sent += 1
    assert first <= pids and len(pids) >= 3, (first, pids)  # both first workers, and a replacement
    wait_until(lambda: set(children(s.proc.pid)) != first)
    series = egress_series(mport)
    assert series[("tcp", f"localhost:{allowed.port}", "allow")] == sent
    assert series[("tcp", f"127.0.0.1:{denied.port}", "deny")] == sent
    assert allowed.settle() == sent and denied.count == 0
    restarts = {dict(ls)["reason"]: v for (n, ls), v in samples(mport).items()
                if n == "ferrule_worker_restarts_total"}
    assert restarts["max-requests"] >= 1


def test_no_egress_no_series(serve):
    mport = free_port()
    s = serve("egress_app:app", "--metrics-bind", f"127.0.0.1:{mport}")
    wait_until(lambda: _answers(mport))
    booted(s, 1)
    assert egress_series(mport) == {}
