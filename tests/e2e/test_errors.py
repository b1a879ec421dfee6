"""App errors and bad clients: clear answers, logs, nothing leaked, nothing harmed."""

import socket
import time

from conftest import parse, raw


def get(port, path):
    return parse(raw(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()))


def test_app_exception_is_500_with_traceback_in_log_only(serve):
    s = serve("routes:app")
    status, _, body = get(s.port, "/error")
    assert status == 500 and b"secret" not in body and b"Traceback" not in body
    assert get(s.port, "/hello")[0] == 200
    s.stop()
    log = s.log()
    assert "Error handling request /error" in log and "Traceback" in log
    assert "ValueError: secret detail" in log


def test_protocol_violations_become_500_and_are_logged(serve):
    s = serve("routes:app")
    for path, words in [("/bad-header", "control character"), ("/hop-by-hop", "hop-by-hop"),
                        ("/not-bytes", "must yield bytes"), ("/twice", "second time"),
                        ("/no-start", "without calling start_response"),
                        ("/no-headers", "takes a status and a list of headers")]:
        status, _, body = get(s.port, path)
        assert status == 500, path
        assert b"Injected" not in body
    s.stop()
    log = s.log()
    for words in ["control character", "hop-by-hop", "must yield bytes", "second time", "start_response",
                  "takes a status and a list of headers"]:
        assert words in log, words


def test_a_remembered_field_is_checked_against_the_others_every_time(serve):
    # The same two constant tuples declare two different lengths: the second response
    # takes them from the server's memory of checked fields and must fail the same way.
    s = serve("routes:app")
    for _ in range(3):
        assert get(s.port, "/two-lengths")[0] == 500
    s.stop()
    assert s.log().count("two different Content-Length headers") == 3


def test_error_after_head_cuts_the_connection(serve):
    s = serve("routes:app")
    reply = raw(s.port, b"GET /error-after HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert b"partial" in reply and not reply.endswith(b"0\r\n\r\n")  # no last chunk: incomplete
    s.stop()
    assert "failed mid-stream" in s.log()


def test_content_length_mismatch_closes_and_logs(serve):
    s = serve("routes:app", "--log-level", "debug")
    reply = raw(s.port, b"GET /cl-more HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = parse(reply)
    assert body == b"abc" and reply.count(b"HTTP/1.1") == 1  # connection closed after it
    reply = raw(s.port, b"GET /cl-less HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.endswith(b"abc") and reply.count(b"HTTP/1.1") == 1
    s.stop()
    assert s.log().count("Content-Length") >= 2


def test_malformed_requests_get_4xx_and_a_log_line(serve):
    s = serve("routes:app")
    cases = [
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 9000 + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),  # gunicorn 27 and nginx; gunicorn 26: 400
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br\r\n\r\n", 501),
    ]
    for req, want in cases:
        status, _, _ = parse(raw(s.port, req))
        assert status == want, req[:40]
    s.stop()
    assert s.log().count("invalid request from 127.0.0.1") == len(cases)


def test_bad_chunk_in_body_is_400(serve):
    s = serve("routes:app")
    reply = raw(s.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
    assert parse(reply)[0] == 400
    s.stop()
    assert "bad request body" in s.log()


def test_header_timeout_gives_408(serve):
    s = serve("routes:app", "--header-timeout", "0.5")
    start = time.monotonic()
    reply = raw(s.port, b"GET /hello HTTP/1.1\r\nHost: x\r\n", half_close=False)
    assert parse(reply)[0] == 408 and time.monotonic() - start < 5


def test_body_limit_gives_413(serve):
    s = serve("routes:app", "--limit-request-body", "10")
    reply = raw(s.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n" + b"x" * 11)
    assert parse(reply)[0] == 413


def test_client_disconnect_mid_response_calls_close_and_harms_nothing(serve, tmp_path):
    marker = tmp_path / "closed"
    s = serve("routes:app", "--log-level", "debug", env={"FERRULE_CLOSE_MARKER": str(marker)})
    with socket.create_connection(("127.0.0.1", s.port)) as c:
        c.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
        c.recv(65536)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    # The log goes into each message: this test failed once in about 40 full runs. A race
    # found since could explain it: close() created the marker before writing it, so the
    # poll above could read it empty (it is now written aside and renamed).
    assert marker.exists() and marker.read_text() == "closed", s.log()
    assert get(s.port, "/hello")[0] == 200, s.log()
    s.stop()
    log = s.log()
    assert "client disconnected" in log and "Traceback" not in log, log


def test_wsgi_errors_goes_to_the_error_log(serve):
    s = serve("routes:app")
    assert get(s.port, "/errors-stream")[0] == 200
    s.stop()
    assert "app wrote to wsgi.errors" in s.log()


def test_exc_info_after_the_head_reraises_and_cuts_the_connection(serve):
    s = serve("routes:app")
    reply = raw(s.port, b"GET /exc-info-late HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK") and b"head is out" in reply and b"never" not in reply
    s.stop()
    assert "KeyError: 'late failure'" in s.log()


def test_body_read_timeout_gives_408(serve):
    s = serve("routes:app", "--io-timeout", "0.5")
    start = time.monotonic()
    reply = raw(s.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", half_close=False)
    assert parse(reply)[0] == 408 and time.monotonic() - start < 5
