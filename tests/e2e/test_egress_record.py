"""The egress record (docs/egress.md, "Reading the log"): one line per outbound attempt, keys
exactly, for every way a Flask app reaches out: the socket module, requests, urllib, pycurl
(libcurl), a UDP SysLogHandler, psycopg2 (libpq) over TCP and over a unix socket, and libc
connect(2) through ctypes; IPv6 loopback; the access log atoms; and nothing when it is off."""

from __future__ import annotations

import concurrent.futures
import re

import pytest

from conftest import wait_until

from .egress_support import (KEYS, REQUEST_ID, call, check, has_ipv6_loopback, listeners, postgres, q,  # noqa: F401
                            records, start, to_port, wait_records)


def one(log, port, **expected):
    """Waits for the single record to `port` and checks it."""
    recs = wait_records(log, 1, to_port(port))
    assert len(recs) == 1, recs
    check(recs[0], port=port, **expected)
    return recs[0]


def test_a_socket_connect_is_one_record_with_the_request_fields(serve, tmp_path, listeners):
    target = listeners()
    s, log = start(serve, tmp_path)
    status, got = call(s.port, f"/socket?to=127.0.0.1:{target.port}")
    assert status == 200 and got["results"] == ["ok"]
    assert REQUEST_ID.match(got["request_id"]), got
    one(log, target.port, pid=got["pid"], request_id=got["request_id"], method="GET", path="/socket",
        proto="tcp", addr="127.0.0.1", verdict="allow", ms_known=True)
    assert target.settle() == 1



def test_the_path_is_path_info_decoded_below_script_name(serve, tmp_path, listeners):
    # The issue's `path` is the request's PATH_INFO: percent-decoded, without SCRIPT_NAME.
    target = listeners()
    s, log = start(serve, tmp_path, env={"SCRIPT_NAME": "/app"})  # gunicorn takes it from the environment
    status, got = call(s.port, f"/app/%73ocket?to=127.0.0.1:{target.port}")
    assert status == 200 and got["results"] == ["ok"], got
    one(log, target.port, pid=got["pid"], request_id=got["request_id"], method="GET", path="/socket",
        proto="tcp", addr="127.0.0.1", verdict="allow", ms_known=True)

def test_a_non_blocking_connect_is_recorded(serve, tmp_path, listeners):
    target = listeners()
    s, log = start(serve, tmp_path)
    _, got = call(s.port, f"/socket?to=127.0.0.1:{target.port}&nb=1")
    assert got["results"] == ["ok"]
    # EINPROGRESS, then watched: `ms` when the supervisor saw it end, else null.
    one(log, target.port, pid=got["pid"], request_id=got["request_id"], method="GET", path="/socket",
        proto="tcp", addr="127.0.0.1", verdict="allow", ms_known=None)
    assert target.settle() == 1


def test_a_resolved_name_is_the_host_and_a_literal_ip_has_none(serve, tmp_path, listeners):
    a, b = listeners(), listeners()
    s, log = start(serve, tmp_path)
    _, got = call(s.port, f"/socket?to=localhost:{a.port}&to=127.0.0.1:{b.port}")
    assert got["results"] == ["ok", "ok"]
    one(log, a.port, request_id=got["request_id"], proto="tcp", addr="127.0.0.1", host="localhost",
        verdict="allow", ms_known=True)
    one(log, b.port, request_id=got["request_id"], proto="tcp", addr="127.0.0.1", host=None,
        verdict="allow", ms_known=True)


@pytest.mark.parametrize("client", ["requests", "urllib", "pycurl"])
def test_http_clients_are_recorded(serve, tmp_path, listeners, client):
    if client == "pycurl":
        pytest.importorskip("pycurl", reason="pycurl has no wheel here (`make test` installs it when it has)")
    web = listeners(mode="http")
    s, log = start(serve, tmp_path)
    _, got = call(s.port, f"/{client}?url={q(f'http://127.0.0.1:{web.port}/')}")
    assert got["results"] == ["ok"], got
    # libcurl resolves and connects in C: no Python hook sees it, the record comes all the same.
    # All three connect non-blocking (a timeout): `ms` is known when the supervisor saw the end.
    one(log, web.port, pid=got["pid"], request_id=got["request_id"], method="GET", path=f"/{client}",
        proto="tcp", addr="127.0.0.1", verdict="allow", ms_known=None)
    assert web.settle() == 1


def test_requests_to_a_name_records_the_name(serve, tmp_path, listeners):
    web = listeners(mode="http")
    s, log = start(serve, tmp_path)
    _, got = call(s.port, f"/requests?url={q(f'http://localhost:{web.port}/')}")
    assert got["results"] == ["ok"], got
    recs = wait_records(log, 1, lambda r: r["port"] == web.port and r["addr"] == "127.0.0.1")
    check(recs[0], port=web.port, request_id=got["request_id"], proto="tcp", addr="127.0.0.1", host="localhost",
          verdict="allow", ms_known=None)
    # Where localhost also resolves to ::1 (tried first, refused), that attempt is its own line.
    for r in records(log):
        if r["port"] == web.port and r["addr"] != "127.0.0.1":
            assert (r["addr"], r["host"]) == ("::1", "localhost"), r


@pytest.mark.parametrize("how", ["connected=0", "connected=1", "via=sendmsg"], ids=["sendto", "connected", "sendmsg"])
def test_udp_sends_are_recorded_without_ms(serve, tmp_path, listeners, how):
    sink = listeners("udp")
    s, log = start(serve, tmp_path)
    _, got = call(s.port, f"/udp?to=127.0.0.1:{sink.port}&{how}")
    assert got["results"] == ["ok"]
    one(log, sink.port, pid=got["pid"], request_id=got["request_id"], method="GET", path="/udp",
        proto="udp", addr="127.0.0.1", verdict="allow", ms_known=False)
    assert sink.settle() == 1


def test_a_udp_syslog_handler_is_recorded(serve, tmp_path, listeners):
    sink = listeners("udp")
    s, log = start(serve, tmp_path)
    _, got = call(s.port, f"/syslog?port={sink.port}")
    assert got["results"] == ["ok"]
    one(log, sink.port, request_id=got["request_id"], path="/syslog", proto="udp", addr="127.0.0.1",
        verdict="allow", ms_known=False)
    assert sink.settle() == 1


def test_a_ctypes_connect_is_recorded(serve, tmp_path, listeners):
    target = listeners()
    s, log = start(serve, tmp_path)
    _, got = call(s.port, f"/ctypes?to=127.0.0.1:{target.port}")
    assert got["results"] == ["ok"]
    one(log, target.port, pid=got["pid"], request_id=got["request_id"], method="GET", path="/ctypes",
        proto="tcp", addr="127.0.0.1", host=None, verdict="allow", ms_known=True)
    assert target.settle() == 1


def test_psycopg2_over_tcp_is_recorded_and_over_a_unix_socket_is_not(serve, tmp_path, listeners, postgres):
    after = listeners()
    s, log = start(serve, tmp_path)
    _, got = call(s.port, f"/pg?dsn={q(postgres.dsn())}")
    assert got["results"] == ["ok"], got
    one(log, postgres.port, pid=got["pid"], request_id=got["request_id"], method="GET", path="/pg",
        proto="tcp", addr="127.0.0.1", host=None, verdict="allow", ms_known=None)
    _, unix = call(s.port, f"/pg?dsn={q(postgres.dsn(unix=True))}")
    assert unix["results"] == ["ok"], unix
    # A later connect's line is written after any line the unix connect would have made.
    _, marker = call(s.port, f"/socket?to=127.0.0.1:{after.port}")
    assert marker["results"] == ["ok"]
    wait_records(log, 1, to_port(after.port))
    assert not [r for r in records(log) if r["request_id"] == unix["request_id"]]
    assert len([r for r in records(log) if r["port"] == postgres.port]) == 1


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this host has no IPv6 loopback (::1)")
@pytest.mark.parametrize("route", ["socket", "ctypes"])
def test_ipv6_loopback_is_recorded_without_brackets(serve, tmp_path, listeners, route):
    target = listeners(addr="::1")
    s, log = start(serve, tmp_path)
    _, got = call(s.port, f"/{route}?to=[::1]:{target.port}")
    assert got["results"] == ["ok"]
    one(log, target.port, request_id=got["request_id"], path=f"/{route}", proto="tcp", addr="::1", host=None,
        verdict="allow", ms_known=True)
    assert target.settle() == 1


def test_the_access_log_atoms(serve, tmp_path, listeners):
    a, b = listeners(), listeners()
    denied = listeners()
    access = tmp_path / "access.log"
    s, log = start(serve, tmp_path, "--egress-deny", f"127.0.0.1:{denied.port}", "--access-logfile", str(access),
                   "--access-logformat", "%(U)s|%(request_id)s|%(egress)s|%(egress_ms)s")
    to = [f"127.0.0.1:{a.port}", f"localhost:{b.port}", f"127.0.0.1:{a.port}", f"127.0.0.1:{denied.port}"]
    if has_ipv6_loopback():
        c6 = listeners(addr="::1")
        to.append(f"[::1]:{c6.port}")
    _, got = call(s.port, "/socket?" + "&".join(f"to={q(t)}" for t in to))
    assert got["results"][:4] == ["ok", "ok", "ok", "PermissionError"]
    _, idle = call(s.port, "/env")
    lines = wait_until_lines(access, 2)
    rid, dests, ms = lines["/socket"]
    assert rid == got["request_id"]
    # Distinct, in first-attempt order, a name when one was resolved, denied ones included.
    want = [f"127.0.0.1:{a.port}", f"localhost:{b.port}", f"127.0.0.1:{denied.port}"]
    if has_ipv6_loopback():
        want.append(f"[::1]:{c6.port}")
    assert dests == ",".join(want)
    assert re.fullmatch(r"\d+\.\d{3}", ms) and float(ms) > 0, ms
    # The atom adds up the request's connects whose end the supervisor had seen when the
    # line was written: a non-blocking connect (Python with a timeout) is watched, and under
    # load its end may be seen after the response (docs/egress.md), so it is at most the
    # records' sum (each record rounds to 3 decimals).
    mine = [r["ms"] for r in records(log) if r["request_id"] == got["request_id"] and r["ms"] is not None]
    assert len(mine) == len(to) - 1, mine  # every allowed connect's record knows its ms
    assert float(ms) <= sum(mine) + 0.001 * len(mine) + 0.001, (mine, ms)
    assert lines["/env"] == [idle["request_id"], "-", "0.000"]
    assert denied.settle() == 0


def wait_until_lines(access, n):
    text = wait_until(lambda: access.exists() and len(access.read_text().splitlines()) >= n and access.read_text())
    return {parts[0]: parts[1:] for parts in (line.split("|") for line in text.splitlines())}


def test_off_by_default_no_record_no_request_id(serve, tmp_path, listeners):
    target = listeners()
    access = tmp_path / "access.log"
    s = serve("egress_app:app", "--access-logfile", str(access))  # gunicorn's default format
    _, got = call(s.port, f"/socket?to=127.0.0.1:{target.port}")
    assert got["results"] == ["ok"]
    assert got["has_request_id"] is False
    assert target.settle() == 1
    wait_until(lambda: access.exists() and "GET /socket" in access.read_text())
    assert not list(tmp_path.glob("egress*"))
    assert '"verdict"' not in s.out() + s.log() + access.read_text()
    assert "Egress" not in s.log()


def test_the_atoms_with_egress_off(serve, tmp_path, listeners):
    # Asking for %(request_id)s makes ids (the app sees the same one, to log with its own
    # lines); %(egress)s and %(egress_ms)s have nothing to show.
    target = listeners()
    access = tmp_path / "access.log"
    s = serve("egress_app:app", "--access-logfile", str(access),
              "--access-logformat", "%(U)s|%(request_id)s|%(egress)s|%(egress_ms)s")
    _, got = call(s.port, f"/socket?to=127.0.0.1:{target.port}")
    assert got["results"] == ["ok"] and REQUEST_ID.match(got["request_id"]), got
    lines = wait_until_lines(access, 1)
    assert lines["/socket"] == [got["request_id"], "-", "-"]
    assert target.settle() == 1
    assert not list(tmp_path.glob("egress*"))


def test_a_log_line_is_one_json_object_with_the_keys_in_order(serve, tmp_path, listeners):
    # Many attempts from 8 threads at once: every line parses whole (records() checks the keys).
    targets = [listeners() for _ in range(4)]
    s, log = start(serve, tmp_path, "--threads", "8")
    path = "/socket?" + "&".join(f"to=127.0.0.1:{t.port}" for t in targets for _ in range(5))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: call(s.port, path)[1], range(16)))
    recs = wait_records(log, 16 * 20)
    assert len(recs) == 16 * 20
    assert {r["request_id"] for r in recs} == {a["request_id"] for a in answers}
    assert all(list(r) == KEYS for r in recs)
    assert sum(t.settle() for t in targets) == 16 * 20
