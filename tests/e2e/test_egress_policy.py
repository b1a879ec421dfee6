"""The egress policy (docs/egress.md, "Policy"): deny and allow rules on loopback ports, each
checked against a listener that counts what reaches it (zero for a denied attempt: it never
reaches the network), the app's PermissionError (psycopg2's "Permission denied"), the request
answering normally, and the record's verdict and rule."""

from __future__ import annotations

import pytest

from .egress_support import (call, check, has_ipv6_loopback, listeners, postgres, q, records, start,  # noqa: F401
                            to_port, wait_records)


def attempt(s, log, target, route="socket", to=None):
    """One request reaching `target` by `route`: (its answer, its one record)."""
    to = to or f"127.0.0.1:{target.port}"
    if route in ("requests", "urllib", "pycurl"):
        status, got = call(s.port, f"/{route}?url={q(f'http://{to}/')}")
    else:
        status, got = call(s.port, f"/{route}?to={q(to)}")
    assert status == 200, got  # a denial is the app's to handle: the request goes on
    recs = wait_records(log, 1, to_port(target.port))
    assert len(recs) == 1, recs
    return got, recs[0]


def denied(s, log, target, rule, route="socket", to=None, proto="tcp", addr="127.0.0.1", host=None):
    got, rec = attempt(s, log, target, route, to)
    check(rec, pid=got["pid"], request_id=got["request_id"], method="GET", path=f"/{route}", proto=proto,
          addr=addr, port=target.port, host=host, verdict="deny", rule=rule, ms_known=False)
    assert target.settle() == 0
    return got["results"]


def allowed(s, log, target, rule, route="socket", to=None, proto="tcp", addr="127.0.0.1", host=None):
    got, rec = attempt(s, log, target, route, to)
    check(rec, request_id=got["request_id"], proto=proto, addr=addr, port=target.port, host=host,
          verdict="allow", rule=rule, ms_known=None if proto == "tcp" else False)
    assert target.settle() == 1
    return got["results"]


@pytest.mark.parametrize("route", ["socket", "ctypes", "requests", "urllib"])
def test_a_denied_port_is_never_reached_and_the_app_gets_permission_error(serve, tmp_path, listeners, route):
    no, yes = listeners(mode="http"), listeners(mode="http")
    spec = f"127.0.0.1:{no.port}"
    s, log = start(serve, tmp_path, "--egress-deny", spec)
    assert denied(s, log, no, spec, route) == ["PermissionError"]
    results = allowed(s, log, yes, None, route)
    assert results == ["ok"]


def test_pycurl_is_denied_at_its_connect(serve, tmp_path, listeners):
    pytest.importorskip("pycurl", reason="pycurl has no wheel here (`make test` installs it when it has)")
    no = listeners(mode="http")
    spec = f"127.0.0.1:{no.port}"
    s, log = start(serve, tmp_path, "--egress-deny", spec)
    [result] = denied(s, log, no, spec, "pycurl")
    assert result.startswith("pycurl.error: "), result


def test_psycopg2_denied_says_permission_denied_and_its_unix_socket_is_not_egress(serve, tmp_path, postgres):
    spec = f"127.0.0.1:{postgres.port}"
    s, log = start(serve, tmp_path, "--egress-deny", spec)
    _, got = call(s.port, f"/pg?dsn={q(postgres.dsn())}")
    [result] = got["results"]
    assert result.startswith("OperationalError") and "Permission denied" in result, result
    [rec] = wait_records(log, 1, to_port(postgres.port))
    check(rec, pid=got["pid"], request_id=got["request_id"], method="GET", path="/pg", proto="tcp",
          addr="127.0.0.1", port=postgres.port, host=None, verdict="deny", rule=spec, ms_known=False)
    # The same server over its unix socket: not egress, neither denied nor logged.
    _, unix = call(s.port, f"/pg?dsn={q(postgres.dsn(unix=True))}")
    assert unix["results"] == ["ok"], unix
    _, again = call(s.port, f"/pg?dsn={q(postgres.dsn())}")  # a later line, written after
    wait_records(log, 1, lambda r: r["request_id"] == again["request_id"])
    assert not [r for r in records(log) if r["request_id"] == unix["request_id"]]


@pytest.mark.parametrize("how", ["connected=0", "connected=1", "via=sendmsg"], ids=["sendto", "connected", "sendmsg"])
def test_a_denied_udp_destination_gets_no_datagram(serve, tmp_path, listeners, how):
    sink = listeners("udp")
    spec = f"127.0.0.1:{sink.port}"
    s, log = start(serve, tmp_path, "--egress-deny", spec)
    _, got = call(s.port, f"/udp?to={spec}&{how}")
    assert got["results"] == ["PermissionError"]
    [rec] = wait_records(log, 1, to_port(sink.port))
    check(rec, request_id=got["request_id"], path="/udp", proto="udp", addr="127.0.0.1", port=sink.port,
          verdict="deny", rule=spec, ms_known=False)
    assert sink.settle() == 0


def test_a_denied_syslog_handler_sends_nothing(serve, tmp_path, listeners):
    sink = listeners("udp")
    spec = f"127.0.0.1:{sink.port}"
    s, log = start(serve, tmp_path, "--egress-deny", spec)
    _, got = call(s.port, f"/syslog?port={sink.port}")
    assert got["results"] == ["error"]  # logging reports the PermissionError through handleError
    [rec] = wait_records(log, 1, to_port(sink.port))
    check(rec, request_id=got["request_id"], proto="udp", addr="127.0.0.1", port=sink.port, verdict="deny",
          rule=spec, ms_known=False)
    assert sink.settle() == 0


def test_a_cidr_rule_denies_every_port_it_covers(serve, tmp_path, listeners):
    tcp, udp = listeners(), listeners("udp")
    s, log = start(serve, tmp_path, "--egress-deny", "127.0.0.0/8")
    assert denied(s, log, tcp, "127.0.0.0/8") == ["PermissionError"]
    _, got = call(s.port, f"/udp?to=127.0.0.1:{udp.port}")
    assert got["results"] == ["PermissionError"]
    assert udp.settle() == 0


def test_a_host_name_rule_denies_what_the_name_resolved_to(serve, tmp_path, listeners):
    named, literal = listeners(), listeners()
    spec = f"localhost:{named.port}"
    s, log = start(serve, tmp_path, "--egress-deny", spec)
    res = denied(s, log, named, spec, to=f"localhost:{named.port}", host="localhost")
    assert res == ["PermissionError"]
    # The rule names the host and that port: another port is not its business.
    assert allowed(s, log, literal, None, to=f"localhost:{literal.port}", host="localhost") == ["ok"]


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this host has no IPv6 loopback (::1)")
@pytest.mark.parametrize("spec_of", [lambda p: f"[::1]:{p}", lambda p: "::1/128"], ids=["addr-port", "cidr"])
def test_an_ipv6_rule_denies_ipv6_loopback(serve, tmp_path, listeners, spec_of):
    six, four = listeners(addr="::1"), listeners()
    spec = spec_of(six.port)
    s, log = start(serve, tmp_path, "--egress-deny", spec)
    assert denied(s, log, six, spec, "socket", to=f"[::1]:{six.port}", addr="::1") == ["PermissionError"]
    assert allowed(s, log, four, None) == ["ok"]


def test_deny_wins_over_allow(serve, tmp_path, listeners):
    no, yes = listeners(), listeners()
    spec = f"127.0.0.1:{no.port}"
    s, log = start(serve, tmp_path, "--egress-allow", "127.0.0.1", "--egress-deny", spec)
    assert denied(s, log, no, spec) == ["PermissionError"]
    assert allowed(s, log, yes, "127.0.0.1") == ["ok"]


@pytest.mark.parametrize("route", ["socket", "ctypes"])
def test_allow_rules_deny_everything_else(serve, tmp_path, listeners, route):
    yes, no, sink = listeners(), listeners(), listeners("udp")
    spec = f"127.0.0.1:{yes.port}"
    s, log = start(serve, tmp_path, "--egress-allow", spec)
    assert allowed(s, log, yes, spec, route) == ["ok"]
    assert denied(s, log, no, None, route) == ["PermissionError"]  # default deny: no rule
    _, got = call(s.port, f"/udp?to=127.0.0.1:{sink.port}")
    assert got["results"] == ["PermissionError"]
    assert sink.settle() == 0


@pytest.mark.parametrize("keyword", ["metadata", "private"])
def test_the_keywords_do_not_cover_loopback(serve, tmp_path, listeners, keyword):
    # Rule matching only, never a connect to a metadata or private address: as a deny rule
    # the keyword leaves loopback alone; as the only allow rule, loopback is denied.
    a, b = listeners(), listeners()
    s, log = start(serve, tmp_path, "--egress-deny", keyword)
    assert allowed(s, log, a, None) == ["ok"]
    s.stop()
    t, log2 = start(serve, tmp_path, "--egress-allow", keyword, name="allow.log")
    assert denied(t, log2, b, None) == ["PermissionError"]


def test_a_background_thread_is_under_the_policy_too(serve, tmp_path, listeners):
    no = listeners()
    spec = f"127.0.0.1:{no.port}"
    s, log = start(serve, tmp_path, "--egress-deny", spec)
    _, got = call(s.port, f"/bg?to={spec}")
    assert got["results"] == ["PermissionError"]
    [rec] = wait_records(log, 1, to_port(no.port))
    check(rec, request_id=None, method=None, path=None, proto="tcp", addr="127.0.0.1", port=no.port,
          verdict="deny", rule=spec, ms_known=False)
    assert no.settle() == 0


def test_a_thread_flipping_the_address_never_gets_a_denied_connect_through(serve, tmp_path, listeners):
    # The supervisor judges a copy of the address and connects with that same copy, so the
    # app's other thread rewriting the port meanwhile cannot slip the denied one in.
    yes, no = listeners(), listeners()
    spec = f"127.0.0.1:{no.port}"
    s, log = start(serve, tmp_path, "--egress-deny", spec)
    _, got = call(s.port, f"/race?allow={yes.port}&deny={no.port}&n=400")
    outcomes = got["outcomes"]
    assert set(outcomes) <= {"ok", "EACCES"} and sum(outcomes.values()) == 400, outcomes
    # Both ports were tried (the flipper ran while connects were in flight: ~70/30 here).
    assert outcomes.get("ok", 0) > 0 and outcomes.get("EACCES", 0) > 0, outcomes
    assert no.settle() == 0
    assert yes.settle() == outcomes.get("ok", 0)
    recs = wait_records(log, 400, lambda r: r["request_id"] == got["request_id"])
    assert len(recs) == 400
    for r in recs:
        want = ("deny", spec) if r["port"] == no.port else ("allow", None)
        assert r["port"] in (yes.port, no.port) and (r["verdict"], r["rule"]) == want, r
    assert sum(r["verdict"] == "deny" for r in recs) == outcomes.get("EACCES", 0)


def test_egress_counts_are_by_destination_and_verdict(serve, tmp_path, listeners):
    yes, no = listeners(), listeners()
    spec = f"127.0.0.1:{no.port}"
    s, log = start(serve, tmp_path, "-w", "1", "--egress-deny", spec)
    _, got = call(s.port, f"/socket?to=127.0.0.1:{no.port}&to=127.0.0.1:{no.port}&to=127.0.0.1:{yes.port}")
    assert got["results"] == ["PermissionError", "PermissionError", "ok"]
    wait_records(log, 3)
    _, counted = call(s.port, "/counts")
    mine = [c for c in counted["results"] if c[2] in (yes.port, no.port)]
    assert sorted(mine) == sorted([["tcp", "127.0.0.1", no.port, None, "deny", 2],
                                   ["tcp", "127.0.0.1", yes.port, None, "allow", 1]]), counted


def test_egress_counts_are_empty_when_egress_is_off(serve, listeners):
    target = listeners()
    s = serve("egress_app:app")
    _, got = call(s.port, f"/socket?to=127.0.0.1:{target.port}")
    assert got["results"] == ["ok"]
    assert call(s.port, "/counts")[1]["results"] == []
