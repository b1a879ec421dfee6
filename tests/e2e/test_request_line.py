"""The request line as gunicorn 27 treats it: logged at --log-level debug (gunicorn's
default pre_request hook), and 414 when it is over --limit-request-line."""

from __future__ import annotations

from conftest import parse, raw, wait_until


def test_debug_logs_each_request_line_and_info_does_not(serve):
    debug = serve("routes:app", "--log-level", "debug")
    info = serve("routes:app")
    for s in (debug, info):
        assert parse(raw(s.port, b"GET /hello?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 200
        assert parse(raw(s.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"))[0] == 200
    # gunicorn logs "%s %s" % (req.method, req.path): the path without its query.
    wait_until(lambda: "GET /hello\n" in debug.log() and "POST /echo\n" in debug.log())
    assert "] GET /hello" in debug.log()
    assert "/hello" not in info.log() and "/echo" not in info.log()


def test_a_request_line_over_the_limit_gets_414(serve):
    s = serve("routes:app", "--limit-request-line", "100")
    status, headers, body = parse(raw(s.port, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert (status, headers["connection"], body) == (414, "close", b"414 URI Too Long\n")
    # At the limit it is served.
    line = b"GET /hello?" + b"a" * (100 - len(b"GET /hello? HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 100
    assert parse(raw(s.port, line + b"\r\nHost: x\r\n\r\n"))[0] == 200
