"""`--protocol uwsgi` against a real ferrule, with raw uwsgi packets written here as
nginx's uwsgi module writes them (the tests with nginx itself are in test_nginx.py)."""

import hashlib
import json
import os
import socket
import struct
import time

import pytest

from conftest import parse, raw, wait_until

APP = "uwsgi_app:app"


def packet(pairs, modifier1=0):
    """A uwsgi request packet: the 4-byte header, then each name and value with its
    little-endian u16 length (nginx's ngx_http_uwsgi_create_request)."""
    block = b""
    for name, value in pairs:
        for field in (name, value):
            data = field if isinstance(field, bytes) else field.encode("latin-1")
            block += struct.pack("<H", len(data)) + data
    return struct.pack("<BHB", modifier1, len(block), 0) + block


def nginx_vars(method="GET", uri="/env", body_len=0, extra=(), protocol="HTTP/1.1", path_info=None):
    """What Debian's /etc/nginx/uwsgi_params send, then the request's fields."""
    path, _, query = uri.partition("?")
    return [
        ("QUERY_STRING", query), ("REQUEST_METHOD", method),
        ("CONTENT_TYPE", "text/plain" if body_len else ""), ("CONTENT_LENGTH", str(body_len) if body_len else ""),
        ("REQUEST_URI", uri), ("PATH_INFO", path if path_info is None else path_info),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"), ("SERVER_PROTOCOL", protocol), ("REQUEST_SCHEME", "http"),
        ("REMOTE_ADDR", "203.0.113.9"), ("REMOTE_PORT", "50123"), ("SERVER_PORT", "80"),
        ("SERVER_NAME", "example.com"), ("HTTP_HOST", "example.com"), ("HTTP_USER_AGENT", "curl/8.5.0"),
        *extra,
    ]


def connect(target):
    if isinstance(target, int):
        return socket.create_connection(("127.0.0.1", target), timeout=20)
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(str(target))
    return s


def ask(target, pairs, body=b"", modifier1=0):
    """Sends a request as nginx does (packet, then body) and reads until the server
    closes; a reset reads as the bytes that came before it."""
    with connect(target) as s:
        s.sendall(packet(pairs, modifier1) + body)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                return out
            out += chunk
        return out


def uwsgi_server(serve, *args):
    return serve(APP, "--protocol", "uwsgi", *args)


def test_the_environ_is_made_of_the_front_server_s_variables(serve):
    s = uwsgi_server(serve)
    body = os.urandom(10 << 20)
    uri = "/app/caf%C3%A9/a%2Fb/env?q=%C3%A9&x=1"
    pairs = nginx_vars("POST", uri, len(body), path_info="/app/caf\u00c3\u00a9/a/b/env", extra=[
        ("SCRIPT_NAME", "/app"), ("HTTPS", "on"), ("X_CUSTOM", "passed through"),
        ("HTTP_X_EMPTY", ""), ("HTTP_COOKIE", "a=1; b=2"),
    ])
    status, headers, data = parse(ask(s.port, pairs, body))
    assert status == 200, data
    env = json.loads(data)
    assert env["body_len"] == len(body) and env["body_sha256"] == hashlib.sha256(body).hexdigest()
    want = {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "/app",
        # As nginx decoded it (UTF-8 bytes as latin-1, PEP 3333), not decoded again.
        "PATH_INFO": "/caf\u00c3\u00a9/a/b/env", "QUERY_STRING": "q=%C3%A9&x=1",
        "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": str(len(body)),
        "SERVER_NAME": "example.com", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.9", "REMOTE_PORT": "50123", "HTTPS": "on", "wsgi.url_scheme": "https",
        "REQUEST_URI": uri, "DOCUMENT_ROOT": "/usr/share/nginx/html", "X_CUSTOM": "passed through",
        "HTTP_HOST": "example.com", "HTTP_USER_AGENT": "curl/8.5.0", "HTTP_X_EMPTY": "",
        "HTTP_COOKIE": "a=1; b=2",
    }
    assert {k: env.get(k) for k in want} == want


def test_each_request_on_a_thread_gets_its_own_variables_and_no_other(serve):
    # One thread: each environ is built on the one before (`ready.rs`); what the last
    # request sent and this one did not must be gone, and the rest as sent.
    s = uwsgi_server(serve, "--threads", "1")
    mounted = nginx_vars(uri="/app/env", extra=[("SCRIPT_NAME", "/app"), ("X_ONE", "1")])
    steps = [
        (mounted, {"SCRIPT_NAME": "/app", "PATH_INFO": "/env", "X_ONE": "1"}),
        (mounted, {"SCRIPT_NAME": "/app", "PATH_INFO": "/env", "X_ONE": "1"}),
        (nginx_vars(), {"SCRIPT_NAME": "", "PATH_INFO": "/env", "X_ONE": None}),
        (nginx_vars(extra=[("X_DUP", "a"), ("X_DUP", "b")]), {"X_DUP": "b"}),
        (nginx_vars(extra=[("X_DUP", "a"), ("X_DUP", "c")]), {"X_DUP": "c"}),
        (nginx_vars(extra=[("X_DUP", "c")]), {"X_DUP": "c"}),
        (nginx_vars(extra=[("wsgi.url_scheme", "gopher")]), {"wsgi.url_scheme": "gopher"}),
        (nginx_vars(), {"wsgi.url_scheme": "http", "X_DUP": None}),
        (nginx_vars("POST", body_len=3), {"CONTENT_LENGTH": "3", "CONTENT_TYPE": "text/plain"}),
        (nginx_vars(), {"CONTENT_LENGTH": None, "CONTENT_TYPE": None}),
        (nginx_vars(extra=[("HTTP_ACCEPT", "a/b")]), {"HTTP_ACCEPT": "a/b", "HTTP_HOST": "example.com"}),
        (nginx_vars(extra=[("HTTP_ACCEPT", "c/d")]), {"HTTP_ACCEPT": "c/d"}),
        ([p for p in nginx_vars() if p[0] != "HTTP_HOST"], {"HTTP_HOST": None, "HTTP_ACCEPT": None}),
    ]
    for i, (pairs, want) in enumerate(steps):
        body = b"abc" if ("CONTENT_LENGTH", "3") in pairs else b""
        env = json.loads(parse(ask(s.port, pairs, body))[2])
        assert {k: env.get(k) for k in want} == want, (i, env)


def test_a_get_leaves_out_the_empty_content_variables_nginx_sends(serve):
    s = uwsgi_server(serve)
    env = json.loads(parse(ask(s.port, nginx_vars()))[2])
    assert "CONTENT_TYPE" not in env and "CONTENT_LENGTH" not in env
    assert env["wsgi.url_scheme"] == "http" and env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/env"


def test_the_answer_is_what_nginx_reads_without_ferrule_s_date_server_or_connection(serve):
    s = uwsgi_server(serve)
    reply = ask(s.port, nginx_vars(uri="/"))
    assert reply == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    reply = ask(s.port, nginx_vars(method="HEAD", uri="/"))
    assert reply == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"


def test_streamed_blocks_arrive_one_by_one_and_the_body_ends_with_the_connection(serve, tmp_path):
    s = uwsgi_server(serve)
    marker = tmp_path / "go"
    with connect(s.port) as c:
        c.sendall(packet(nginx_vars(uri=f"/stream?{marker}")))
        got = b""
        for i in range(3):
            # Block i arrives while the app waits for this test to have seen it.
            while f"block{i};".encode() not in got:
                chunk = c.recv(65536)
                assert chunk, got
                got += chunk
            (tmp_path / f"go.{i}").touch()
        while chunk := c.recv(65536):
            got += chunk
    assert got == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nblock0;block1;block2;"


def test_a_file_wrapper_answer_arrives_whole_with_its_length(serve, tmp_path):
    s = uwsgi_server(serve)
    data = os.urandom(3 << 20)
    f = tmp_path / "blob"
    f.write_bytes(data)
    status, headers, body = parse(ask(s.port, nginx_vars(uri=f"/file?{f}")))
    assert (status, headers["content-length"], body == data) == (200, str(len(data)), True)


def test_an_app_error_is_500_with_the_traceback_in_the_error_log_only(serve):
    s = uwsgi_server(serve)
    status, headers, body = parse(ask(s.port, nginx_vars(uri="/error")))
    assert status == 500 and b"Traceback" not in body and b"on purpose" not in body
    assert not {"date", "server", "connection"} & set(headers), headers
    wait_until(lambda: "the app failed on purpose" in s.log() and "Traceback" in s.log())


@pytest.mark.parametrize("pairs, modifier1, words", [
    (nginx_vars(), 5, "unsupported uwsgi modifier1 5"),
    ([("REQUEST_METHOD", "GET")], 0, "no SERVER_PROTOCOL"),
    ([("HTTP_HOST", "x")], 0, "uwsgi_params"),
    ([("REQUEST_METHOD", "GET"), ("SERVER_PROTOCOL", "HTTP/1.1"), ("CONTENT_LENGTH", "1e3")], 0,
     "invalid uwsgi CONTENT_LENGTH"),
])
def test_a_bad_packet_is_logged_and_closed_and_never_reaches_the_app(serve, pairs, modifier1, words):
    s = uwsgi_server(serve, "--access-logfile", "-")
    assert ask(s.port, pairs, modifier1=modifier1) == b""
    wait_until(lambda: words in s.log())
    assert "invalid uwsgi request from 127.0.0.1" in s.log()
    assert s.out() == ""


def test_an_inconsistent_packet_is_logged_and_closed(serve):
    s = uwsgi_server(serve)
    data = packet(nginx_vars())
    cut = data[:1] + struct.pack("<H", len(data) - 5) + data[3:-1]  # the last value is cut off
    with connect(s.port) as c:
        c.sendall(cut)
        assert c.recv(100) == b""
    wait_until(lambda: "inconsistent uwsgi packet" in s.log())


def test_a_packet_cut_short_by_its_sender_is_logged_and_never_reaches_the_app(serve):
    s = uwsgi_server(serve, "--access-logfile", "-")
    data = packet(nginx_vars())
    with connect(s.port) as c:
        c.sendall(data[:20])
        c.shutdown(socket.SHUT_WR)
        assert c.recv(100) == b""
    wait_until(lambda: f"the connection closed after 20 bytes of a {len(data)}-byte packet" in s.log())
    assert s.out() == ""


def test_a_peer_outside_uwsgi_allow_from_is_refused_and_a_unix_socket_always_served(serve, tmp_path):
    sock = tmp_path / "u.sock"
    s = uwsgi_server(serve, "--uwsgi-allow-from", "10.0.0.0/8", "-b", f"unix:{sock}")
    wait_until(sock.exists)
    assert ask(s.port, nginx_vars(uri="/")) == b""
    wait_until(lambda: "uwsgi connection from 127.0.0.1 refused: not in --uwsgi-allow-from" in s.log())
    assert parse(ask(sock, nginx_vars(uri="/")))[2] == b"hello"


def _behind_proxy_header(port, pairs):
    """A PROXY v1 header and a packet in one write, as a balancer in front of a
    uwsgi port could send them; reads until the server closes."""
    with connect(port) as c:
        c.sendall(b"PROXY TCP4 10.1.2.3 127.0.0.1 40000 8001\r\n" + packet(pairs))
        out = b""
        while True:
            try:
                chunk = c.recv(65536)
            except ConnectionResetError:  # refused with the packet unread
                return out
            if not chunk:
                return out
            out += chunk


def test_a_proxy_header_does_not_get_a_peer_past_uwsgi_allow_from(serve):
    # The allow list judges the socket's peer at accept, before any byte: a PROXY header
    # arriving with the packet in the same read must not skip it.
    s = uwsgi_server(serve, "--uwsgi-allow-from", "10.0.0.0/8", "--proxy-protocol", "v1")
    assert _behind_proxy_header(s.port, nginx_vars(uri="/")) == b""
    wait_until(lambda: "uwsgi connection from 127.0.0.1 refused: not in --uwsgi-allow-from" in s.log())
    assert s.out() == ""


def test_uwsgi_behind_a_proxy_header_takes_the_client_the_packet_names(serve):
    s = uwsgi_server(serve, "--proxy-protocol", "v1")
    status, _, body = parse(_behind_proxy_header(s.port, nginx_vars(uri="/env")))
    assert status == 200
    env = json.loads(body)
    # nginx's variables are the nearer witness: REMOTE_ADDR is the packet's.
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("203.0.113.9", "50123")


def test_a_config_file_sets_the_protocol_and_the_allow_list(serve, tmp_path):
    conf = tmp_path / "g.conf.py"
    conf.write_text("protocol = 'uwsgi'\nuwsgi_allow_ips = '127.0.0.0/8'\n")
    s = serve(APP, "-c", str(conf))
    assert parse(ask(s.port, nginx_vars(uri="/")))[2] == b"hello"


@pytest.mark.parametrize("extra, scheme", [
    ([("HTTPS", "true")], "https"),
    ([("UWSGI_SCHEME", "https")], "https"),
    ([("HTTPS", "on"), ("UWSGI_SCHEME", "http")], "http"),
])
def test_the_scheme_variables_uwsgi_reads(serve, extra, scheme):
    # `uwsgi_param UWSGI_SCHEME $scheme;` from configs written for uWSGI, which wins there.
    s = uwsgi_server(serve)
    env = json.loads(parse(ask(s.port, nginx_vars(extra=extra)))[2])
    assert env["wsgi.url_scheme"] == scheme


def test_a_trailing_slash_on_script_name_is_the_same_mount(serve):
    s = uwsgi_server(serve)
    env = json.loads(parse(ask(s.port, nginx_vars(uri="/app/x/env", extra=[("SCRIPT_NAME", "/app/")])))[2])
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/x/env")


def test_an_http_request_on_a_uwsgi_bind_says_so(serve):
    s = uwsgi_server(serve)
    assert raw(s.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    wait_until(lambda: "an HTTP request on a bind that speaks --protocol uwsgi?" in s.log())


def test_a_uwsgi_packet_on_an_http_bind_is_400_at_once(serve):
    # nginx `uwsgi_pass` to a ferrule started without --protocol uwsgi: a 400 nginx
    # relays at once, not a 408 after the header timeout.
    s = serve(APP, "--header-timeout", "30")
    started = time.monotonic()
    assert parse(ask(s.port, nginx_vars(uri="/")))[0] == 400
    # Only the start of a packet, the connection left open: no line end will come.
    with connect(s.port) as c:
        c.sendall(packet(nginx_vars(uri="/"))[:40])
        assert c.recv(65536).startswith(b"HTTP/1.1 400 ")
    assert time.monotonic() - started < 5
    wait_until(lambda: s.log().count("as a uwsgi packet does; this bind speaks HTTP") == 2)


def test_limits_are_answered_with_their_status_before_the_app(serve):
    s = uwsgi_server(serve, "--limit-request-body", "4", "--limit-request-line", "30", "--access-logfile", "-")
    assert parse(ask(s.port, nginx_vars("POST", body_len=5), b"hello"))[0] == 413
    assert parse(ask(s.port, nginx_vars(uri="/" + "x" * 40)))[0] == 414
    # Refused before the app, each is in the access log once (test_access_refused.py).
    lines = wait_until(lambda: len(s.out().splitlines()) == 2 and s.out().splitlines())
    assert '"POST /env HTTP/1.1" 413 ' in lines[0] and '" 414 ' in lines[1], lines


def test_a_body_cut_short_is_an_error_the_app_sees_on_wsgi_input(serve):
    s = uwsgi_server(serve, "--request-buffering", "off")
    with connect(s.port) as c:
        c.sendall(packet(nginx_vars("POST", body_len=10)) + b"0123")
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
    wait_until(lambda: "READ FAILED" in s.log())
    # Buffered (the default), the request never reaches the app.
    s = uwsgi_server(serve, "--access-logfile", "-")
    with connect(s.port) as c:
        c.sendall(packet(nginx_vars("POST", body_len=10)) + b"0123")
        c.shutdown(socket.SHUT_WR)
        assert c.recv(65536) == b""
    assert "READ FAILED" not in s.log() and s.out() == ""


def test_a_packet_slower_than_the_header_timeout_gets_408(serve):
    s = uwsgi_server(serve, "--header-timeout", "0.5")
    data = packet(nginx_vars())
    started = time.monotonic()
    with connect(s.port) as c:
        c.sendall(data[:10])
        reply = b""
        while chunk := c.recv(65536):
            reply += chunk
    assert parse(reply)[0] == 408 and time.monotonic() - started < 10


def test_the_access_log_shows_the_client_and_the_request_as_the_client_sent_it(serve):
    fmt = "%(h)s|%(r)s|%(U)s|%(q)s|%(H)s|%(m)s|%({user-agent}i)s|%(a)s|%(s)s|%(b)s"
    s = uwsgi_server(serve, "--access-logfile", "-", "--access-logformat", fmt)
    uri = "/caf%C3%A9/a%2Fb?q=1"
    ask(s.port, nginx_vars(uri=uri, protocol="HTTP/2.0", path_info="/caf\u00c3\u00a9/a/b"))
    line = wait_until(lambda: s.out().strip())
    assert line == f"203.0.113.9|GET {uri} HTTP/2.0|/caf%C3%A9/a%2Fb|q=1|HTTP/2.0|GET|curl/8.5.0|curl/8.5.0|200|5"


def test_start_up_says_what_each_bind_speaks_and_what_has_no_effect(serve, tmp_path):
    sock = tmp_path / "u.sock"
    s = uwsgi_server(serve, "-b", f"unix:{sock}", "--proxy-protocol", "v1",
                     "--forwarded-remote-addr", "x-forwarded-for")
    wait_until(sock.exists)
    log = s.log()
    assert f"Listening at: uwsgi://127.0.0.1:{s.port}" in log
    assert f"Listening at: unix:{sock} (uwsgi)" in log
    assert "PROXY protocol (v1) required from 127.0.0.1,::1" in log
    assert "forwarded_remote_addr has no effect with protocol = 'uwsgi'" in log


def test_a_control_character_in_a_field_is_400_as_over_http(serve):
    # nginx passes on bytes the HTTP parser refuses (ESC, DEL); they must not reach the app
    # or the access log raw.
    s = uwsgi_server(serve, "--access-logfile", "-")
    status, _, _ = parse(ask(s.port, nginx_vars(extra=[("HTTP_USER_AGENT", "a\x1b[31mred\x7f")])))
    assert status == 400
    wait_until(lambda: "invalid uwsgi request from 203.0.113.9" in s.log())
    assert "\x1b" not in s.out() and "\x1b" not in s.log()
