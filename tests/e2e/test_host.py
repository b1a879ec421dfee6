"""Host rules (issue 21, point 8; RFC 9112 §3.2): an invalid Host is 400, an HTTP/1.1
request without Host is 400 unless --permit-missing-host (gunicorn's behaviour), and an
absolute-form target's authority wins over Host for HTTP_HOST, SERVER_NAME and SERVER_PORT."""

from __future__ import annotations

import json
import socket

from conftest import parse, raw, read_response, wait_until


def _environ(port: int, request: bytes) -> dict:
    status, _, body = parse(raw(port, request))
    assert status == 200, body
    return json.loads(body)


def _refused(s, request: bytes, why: str) -> None:
    status, headers, _ = parse(raw(s.port, request))
    assert (status, headers["connection"]) == (400, "close"), request
    wait_until(lambda: why in s.log())


def test_an_invalid_host_is_400_and_never_reaches_the_app(serve):
    s = serve("routes:app")
    for value in (b"a b/c", b"a/b", b"user@host", b"a:b", b"a:123456", b"[::1", b":80", b"caf\xc3\xa9.example"):
        _refused(s, b"GET /environ HTTP/1.1\r\nHost: " + value + b"\r\n\r\n", "invalid Host (InvalidHost)")
    assert "/environ" not in s.out()
    # Valid ones go through, the name and port split for the app.
    for value, name, port in ((b"example.com:8080", "example.com", "8080"), (b"[::1]:81", "[::1]", "81"),
                              (b"0.0.0.0=5000", "0.0.0.0=5000", "80")):
        env = _environ(s.port, b"GET /environ HTTP/1.1\r\nHost: " + value + b"\r\n\r\n")
        assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == (value.decode(), name, port)


def test_http11_without_host_is_400_and_a_second_host_too(serve):
    s = serve("routes:app")
    _refused(s, b"GET /environ HTTP/1.1\r\nX: y\r\n\r\n", "HTTP/1.1 request without Host (MissingHost)")
    _refused(s, b"GET /environ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "invalid header (InvalidHeader)")
    # HTTP/1.0 needs no Host: SERVER_NAME and SERVER_PORT are the listener's.
    env = _environ(s.port, b"GET /environ HTTP/1.0\r\n\r\n")
    assert "HTTP_HOST" not in env
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(s.port))


def test_permit_missing_host_serves_them_as_gunicorn_does(serve, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("permit_missing_host = True\n")
    for s in (serve("routes:app", "--permit-missing-host"), serve("routes:app", "-c", str(conf))):
        env = _environ(s.port, b"GET /environ HTTP/1.1\r\n\r\n")
        assert "HTTP_HOST" not in env
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(s.port))
        # The switch is about a missing Host only.
        _refused(s, b"GET /environ HTTP/1.1\r\nHost: a b\r\n\r\n", "invalid Host")


def test_an_empty_host_is_valid_and_server_name_is_the_listeners(serve):
    s = serve("routes:app")
    env = _environ(s.port, b"GET /environ HTTP/1.1\r\nHost:\r\n\r\n")
    assert env["HTTP_HOST"] == ""
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(s.port))


def test_the_absolute_form_target_wins_over_host_on_one_connection(serve):
    s = serve("routes:app")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        def ask(request: bytes):
            c.sendall(request)
            status, body = read_response(c)
            assert status == 200, body
            env = json.loads(body)
            return env.get("HTTP_HOST"), env["SERVER_NAME"], env["SERVER_PORT"], env["PATH_INFO"]

        # The same Host field each time, other targets: values must follow the target,
        # whatever the environ's caches remember from the request before.
        steps = [
            (b"GET http://x.example:8081/environ?a HTTP/1.1\r\nHost: y.example\r\n\r\n",
             ("x.example:8081", "x.example", "8081", "/environ")),
            (b"GET /environ HTTP/1.1\r\nHost: y.example\r\n\r\n",
             ("y.example", "y.example", "80", "/environ")),
            (b"GET http://u:pw@z.example/environ HTTP/1.1\r\nHost: y.example\r\n\r\n",
             ("z.example", "z.example", "80", "/environ")),
            (b"GET http://[::1]:9/environ HTTP/1.1\r\nHost: y.example\r\n\r\n",
             ("[::1]:9", "[::1]", "9", "/environ")),
            (b"GET http://x.example:8081/environ HTTP/1.1\r\nHost: y.example\r\n\r\n",
             ("x.example:8081", "x.example", "8081", "/environ")),
            (b"GET /environ HTTP/1.1\r\nHost: y.example\r\n\r\n",
             ("y.example", "y.example", "80", "/environ")),
        ]
        for request, want in steps:
            assert ask(request) == want, request
    # Host is still required and checked when the target carries the authority.
    _refused(s, b"GET http://x.example/environ HTTP/1.1\r\n\r\n", "MissingHost")
    _refused(s, b"GET http://x.example/environ HTTP/1.1\r\nHost: a b\r\n\r\n", "InvalidHost")
