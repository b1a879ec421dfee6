"""Requests the server refuses before the app (400, 408, 413, 414, 431, 501, plain HTTP on
a TLS port) are in the access log like any request: the request line when it arrived
whole (else `-`), the status, the bytes of the answer, the client. The reason is in the
error log (throttled), the count in `ferrule_rejected_requests_total`; each refusal is
logged and counted once. A connection closed without a byte is no request."""

from __future__ import annotations

import http.client
import re
import socket
import time

import pytest

from conftest import booted, free_port, parse, raw, wait_until
from .test_uwsgi import nginx_vars, packet

#: gunicorn's default line: client, request line, status, bytes.
LINE = re.compile(r'^(\S+) - - \[[^]]+\] "(.*)" (\d{3}) (\S+) "[^"]*" "[^"]*"$')

#: (what is sent, whether the client then waits for the answer with its side open,
#:  the status, the request line the access log shows, words of the error-log line)
CASES = [
    (b"GET /a HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", False, 400, "GET /a HTTP/1.1",
     "invalid request from 127.0.0.1: invalid header"),
    (b"GET /v HTTP/2.0\r\nHost: x\r\n\r\n", False, 400, "GET /v HTTP/2.0", "InvalidHTTPVersion"),
    (b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", False, 413, "POST /big HTTP/1.1",
     "BodyTooLarge"),
    (b"GET /" + b"x" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n", False, 414, "GET /" + "x" * 200 + " HTTP/1.1",
     "LimitRequestLine"),
    (b"GET /h HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", False, 431, "GET /h HTTP/1.1",
     "LimitRequestHeaders"),
    (b"GET /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br\r\n\r\n", False, 501, "GET /t HTTP/1.1",
     "UnsupportedTransferCoding"),
    (b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", False, 400,
     "POST /c HTTP/1.1", "bad request body for /c"),
    (packet(nginx_vars(uri="/")), False, 400, "-", "as a uwsgi packet does"),
    (b"GET / HTT", True, 408, "-", "did not send a complete request head within --header-timeout"),
    (b"GET /slow HTTP/1.1\r\nHost: x\r\n", True, 408, "GET /slow HTTP/1.1", "within --header-timeout"),
    (b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab", True, 408, "POST /body HTTP/1.1",
     "sent nothing of its request body for --io-timeout"),
]


def scrape(port: int) -> str:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/metrics")
        return c.getresponse().read().decode()
    finally:
        c.close()


def rejected(port: int) -> dict[int, int]:
    text = scrape(port)
    return {int(s): int(float(n)) for s, n in
            re.findall(r'^ferrule_rejected_requests_total\{status="(\d+)"\} (\S+)$', text, re.M)}


def access_lines(path, n: int) -> list[tuple]:
    """(client, request line, status, bytes) of each line, once there are n."""
    lines = wait_until(lambda: path.exists() and len(path.read_text().splitlines()) >= n
                       and path.read_text().splitlines())
    assert len(lines) == n, lines
    out = []
    for line in lines:
        m = LINE.match(line)
        assert m, line
        out.append((m[1], m[2], int(m[3]), m[4]))
    return out


def send(port: int, data: bytes, wait: bool) -> bytes:
    """Sends, then reads until the server closes; `wait` keeps the sending side open (the
    server must time the client out), else it is shut as a client that is done."""
    return raw(port, data, timeout=10, half_close=not wait)


def start(serve, tmp_path, *extra):
    access = tmp_path / "access.log"
    mport = free_port()
    s = serve("metrics_app:app", "--access-logfile", str(access), "--metrics-bind", f"127.0.0.1:{mport}",
              "--header-timeout", "0.5", "--io-timeout", "0.5", "--keep-alive", "1", "--limit-request-line", "100",
              "--limit-request-body", "10", *extra)
    wait_until(lambda: _scrapes(mport))
    return s, access, mport


def _scrapes(port):
    try:
        return "ferrule_workers" in scrape(port)
    except OSError:
        return False


def test_each_refusal_is_one_access_line_one_count_and_its_reason_in_the_error_log(serve, tmp_path):
    s, access, mport = start(serve, tmp_path)
    for i, (data, wait, status, _, words) in enumerate(CASES):
        reply = send(s.port, data, wait)
        assert parse(reply)[0] == status, (data[:40], reply[:80])
        wait_until(lambda: words in s.log())
    got = access_lines(access, len(CASES))
    for (data, _, status, line, _), (client, request, logged_status, size) in zip(CASES, got):
        assert (client, request, logged_status) == ("127.0.0.1", line, status), data[:40]
        # The answer's body, as for any request: "400 Bad Request\n" is 16 bytes.
        assert int(size) > 0
    want: dict[int, int] = {}
    for case in CASES:
        want[case[2]] = want.get(case[2], 0) + 1
    wait_until(lambda: rejected(mport) == want)
    assert s.stop() == 0
    # Stopping added nothing: each was logged once.
    assert len(access.read_text().splitlines()) == len(CASES)


def test_a_connection_closed_without_a_byte_is_not_a_request(serve, tmp_path):
    s, access, mport = start(serve, tmp_path)
    # Closed by its client at once, and left idle until the server closes it.
    socket.create_connection(("127.0.0.1", s.port), timeout=10).close()
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        assert c.recv(100) == b""
    # A keep-alive connection idle after its request: one line, its request's.
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while chunk := c.recv(65536):
            got += chunk
        assert parse(got)[0] == 200
    # Empty lines before a request line are no request either (RFC 9112 §2.2).
    assert parse(raw(s.port, b"\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 200
    got = access_lines(access, 2)
    assert [(r[1], r[2]) for r in got] == [("GET /one HTTP/1.1", 200), ("GET /two HTTP/1.1", 200)]
    assert rejected(mport) == {}
    assert s.stop() == 0
    assert len(access.read_text().splitlines()) == 2


def test_a_flood_is_throttled_in_the_error_log_and_whole_in_the_access_log(serve, tmp_path):
    s, access, mport = start(serve, tmp_path)
    n, deadline = 60, time.monotonic() + 30
    for _ in range(n):
        assert time.monotonic() < deadline
        assert parse(raw(s.port, b"GET /f HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", timeout=10))[0] == 400
    got = access_lines(access, n)
    assert all(r[1:3] == ("GET /f HTTP/1.1", 400) for r in got)
    wait_until(lambda: rejected(mport) == {400: n})
    # Ten lines a second at most, and the rest counted in a summary once the flood ends.
    summary = re.compile(r"invalid requests: (\d+) more in the last \d+ s")
    wait_until(lambda: summary.search(s.log()), timeout=15)
    one_by_one = s.log().count("invalid request from 127.0.0.1")
    assert one_by_one < n
    assert one_by_one + sum(int(m) for m in summary.findall(s.log())) == n
    assert s.stop() == 0


def test_plain_http_on_a_tls_port_is_counted_and_logged(serve, tmp_path):
    pytest.importorskip("trustme")
    from .tls_support import Certs

    certs = Certs(tmp_path)
    s, access, mport = start(serve, tmp_path, "--certfile", certs.path("server.pem"),
                             "--keyfile", certs.path("server.key"))
    reply = raw(s.port, b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
    assert reply.startswith(b"HTTP/1.1 400 ") and reply.endswith(b"sent to HTTPS port\n")
    wait_until(lambda: "plain HTTP request from 127.0.0.1 on a TLS port" in s.log())
    (client, request, status, size), = access_lines(access, 1)
    assert (client, request, status) == ("127.0.0.1", "GET /plain HTTP/1.1", 400)
    assert int(size) == len(b"The plain HTTP request was sent to HTTPS port\n")
    wait_until(lambda: rejected(mport) == {400: 1})
    assert s.stop() == 0


def test_uwsgi_refusals_are_logged_and_counted_and_bad_packets_are_not_requests(serve, tmp_path):
    s, access, mport = start(serve, tmp_path, "--protocol", "uwsgi", "--limit-request-line", "30")
    from .test_uwsgi import ask

    assert parse(ask(s.port, nginx_vars("POST", uri="/up", body_len=50), b"x" * 50))[0] == 413
    assert parse(ask(s.port, nginx_vars(uri="/" + "y" * 40)))[0] == 414
    # A malformed packet is closed on without an answer: the error log only.
    assert ask(s.port, [("HTTP_HOST", "x")]) == b""
    wait_until(lambda: "uwsgi_params" in s.log())
    got = access_lines(access, 2)
    assert [(r[0], r[1], r[2]) for r in got] == [
        ("203.0.113.9", "POST /up HTTP/1.1", 413), ("203.0.113.9", "GET /" + "y" * 40 + " HTTP/1.1", 414)]
    wait_until(lambda: rejected(mport) == {413: 1, 414: 1})
    assert s.stop() == 0
