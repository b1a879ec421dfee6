"""Attribution (docs/egress.md, "Reading the log"): each attempt carries the request whose
thread made it, exactly, with many requests in flight on many threads and in several
workers, for Python and native connects; a thread that serves no request gives null request
fields; `ferrule.request_id` keeps a trusted front end's X-Request-ID and is otherwise 32 hex
characters, distinct across workers and restarts."""

from __future__ import annotations

import signal
import threading

import pytest

from conftest import booted, children, wait_until
from .egress_support import REQUEST_ID, call, check, listeners, records, start, to_port, wait_records  # noqa: F401


def in_flight_together(s, listeners, n, native=False):
    """n requests, each to its own listener, all holding their connection until every one
    has connected (so all n are in flight at each connect); returns [(listener, answer)]."""
    targets = [listeners(mode="hold") for _ in range(n)]
    answers: list = [None] * n

    def one(i):
        answers[i] = call(s.port, f"/hold/{i}?port={targets[i].port}&native={int(native)}")

    clients = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for c in clients:
        c.start()
    try:
        for t in targets:
            t.wait_count(1, timeout=30)
    finally:
        for t in targets:
            t.release()
        for c in clients:
            c.join(60)
    assert all(a is not None and a[0] == 200 and a[1]["results"] == ["ok"] for a in answers), answers
    return [(t, a[1]) for t, a in zip(targets, answers)]


def assert_each_attributed(log, pairs):
    for i, (target, got) in enumerate(pairs):
        recs = wait_records(log, 1, to_port(target.port))
        assert len(recs) == 1, recs
        check(recs[0], pid=got["pid"], request_id=got["request_id"], method="GET", path=f"/hold/{i}",
              port=target.port, proto="tcp", addr="127.0.0.1", verdict="allow", ms_known=True)
    ids = [got["request_id"] for _, got in pairs]
    assert len(set(ids)) == len(ids) and all(REQUEST_ID.match(i) for i in ids), ids


@pytest.mark.parametrize("native", [False, True], ids=["python", "ctypes"])
def test_eight_requests_on_eight_threads_are_each_attributed(serve, tmp_path, listeners, native):
    s, log = start(serve, tmp_path, "-w", "1", "--threads", "8")
    pairs = in_flight_together(s, listeners, 8, native)
    assert len({got["pid"] for _, got in pairs}) == 1
    assert_each_attributed(log, pairs)


def test_two_workers_share_one_log_and_each_line_names_its_worker(serve, tmp_path, listeners):
    # 8 threads each: however the 8 connections fall between the workers, all are in flight.
    s, log = start(serve, tmp_path, "-w", "2", "--threads", "8")
    workers = set(booted(s, 2))
    pairs = in_flight_together(s, listeners, 8)
    assert {got["pid"] for _, got in pairs} <= workers
    assert_each_attributed(log, pairs)


def test_a_thread_started_at_import_has_null_request_fields(serve, tmp_path, listeners):
    at_import, later = listeners(), listeners()
    s, log = start(serve, tmp_path, env={"EGRESS_IMPORT_PORT": str(at_import.port)})
    # The /bg request is in flight while the app's own thread connects for it.
    _, got = call(s.port, f"/bg?to=127.0.0.1:{later.port}")
    assert got["results"] == ["ok"]
    for target in (at_import, later):
        recs = wait_records(log, 1, to_port(target.port))
        check(recs[0], pid=got["pid"], request_id=None, method=None, path=None, proto="tcp", addr="127.0.0.1",
              port=target.port, verdict="allow", ms_known=True)
        assert target.settle() == 1


def test_a_trusted_front_ends_x_request_id_is_kept(serve, tmp_path, listeners):
    target = listeners()
    s, log = start(serve, tmp_path)  # --forwarded-allow-ips defaults to 127.0.0.1
    _, got = call(s.port, f"/socket?to=127.0.0.1:{target.port}", headers={"X-Request-ID": "front-7f3a.42"})
    assert got["request_id"] == "front-7f3a.42"
    recs = wait_records(log, 1, to_port(target.port))
    check(recs[0], request_id="front-7f3a.42", path="/socket", proto="tcp", addr="127.0.0.1", port=target.port,
          verdict="allow", ms_known=True)


@pytest.mark.parametrize("value", ["x" * 201, "has space", "tab\there"], ids=["too-long", "space", "tab"])
def test_an_x_request_id_that_is_not_1_to_200_visible_ascii_is_replaced(serve, tmp_path, value):
    s, _ = start(serve, tmp_path)
    _, got = call(s.port, "/env", headers={"X-Request-ID": value})
    assert REQUEST_ID.match(got["request_id"]), got


def test_an_untrusted_peers_x_request_id_is_replaced(serve, tmp_path):
    # 127.0.0.2 is loopback but not in --forwarded-allow-ips (127.0.0.1).
    s, _ = start(serve, tmp_path)
    _, got = call(s.port, "/env", headers={"X-Request-ID": "spoofed"}, source="127.0.0.2")
    assert REQUEST_ID.match(got["request_id"]), got
    _, trusted = call(s.port, "/env", headers={"X-Request-ID": "spoofed"})
    assert trusted["request_id"] == "spoofed"


def test_a_trusted_list_that_names_the_peer(serve, tmp_path):
    s, _ = start(serve, tmp_path, "--forwarded-allow-ips", "127.0.0.2")
    _, got = call(s.port, "/env", headers={"X-Request-ID": "from-proxy"}, source="127.0.0.2")
    assert got["request_id"] == "from-proxy"
    _, other = call(s.port, "/env", headers={"X-Request-ID": "from-proxy"})
    assert REQUEST_ID.match(other["request_id"]), other


def test_request_ids_are_distinct_across_workers_and_restarts(serve, tmp_path):
    s, log = start(serve, tmp_path, "-w", "2")
    first = booted(s, 2)
    ids, pids = [], set()
    for batch in range(2):
        if batch:
            s.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: (k := children(s.proc.pid)) and len(k) == 2 and not set(k) & set(first) and k)
            booted(s, 2)
        for _ in range(30):
            _, got = call(s.port, "/env")
            ids.append(got["request_id"])
            pids.add(got["pid"])
    assert all(REQUEST_ID.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    assert len(pids) >= 2  # the second batch ran in the replaced workers
    assert records(log) == []  # /env reaches nothing
