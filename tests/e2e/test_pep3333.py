"""PEP 3333 end to end: every feature route, plain and inside wsgiref.validate."""

import json
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import parse, raw, read_response

COMPLAINTS = ("AssertionError", "WSGIWarning", "Exception ignored", "Traceback")


@pytest.fixture(params=["routes:app", "routes:validated"])
def server(request, serve, tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(1024 * 1024))
    s = serve(request.param, env={"FERRULE_TEST_FILE": str(data),
                                  "PYTHONWARNINGS": "error::wsgiref.validate.WSGIWarning"})
    s.data = data.read_bytes()
    s.target = request.param
    yield s
    assert s.stop() == 0
    log = s.log()
    for word in COMPLAINTS:
        assert word not in log, log


def get(server, path, method="GET", body=b"", headers=""):
    req = f"{method} {path} HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n{headers}"
    if body:
        req += f"Content-Length: {len(body)}\r\n"
    return parse(raw(server.port, req.encode() + b"\r\n" + body))


def test_environ_has_every_cgi_and_wsgi_key(server):
    status, _, body = get(server, "/environ?a=1&b=%20", headers="X-Multi: 1\r\nX-Multi: 2\r\nX_Under: no\r\n")
    env = json.loads(body)
    assert status == 200
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "a=1&b=%20"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "example.com" and env["SERVER_PORT"] == "80"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"].isdigit()
    assert env["HTTP_HOST"] == "example.com"
    assert env["HTTP_X_MULTI"] == "1,2"
    assert "HTTP_X_UNDER" not in env  # header names with "_" are dropped
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True and env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False and env["wsgi.input_terminated"] is True
    assert "CONTENT_LENGTH" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert "PATH" not in env  # no copy of the OS environment
    assert env["none_keys"] == []  # the template's placeholders are all replaced


def test_environ_with_more_headers_than_the_template_has_room_for(server):
    # The environ template leaves room for 14 header keys; 40 make the copy grow, and
    # a repeat after the 16th field is found by a lookup instead of the seen list.
    extra = "".join(f"X-Field-{i}: v{i}\r\n" for i in range(40)) + "X-Field-0: again\r\n"
    _, _, body = get(server, "/environ", headers=extra)
    env = json.loads(body)
    assert [env[f"HTTP_X_FIELD_{i}"] for i in range(1, 40)] == [f"v{i}" for i in range(1, 40)]
    assert env["HTTP_X_FIELD_0"] == "v0,again"
    assert env["REQUEST_METHOD"] == "GET" and env["none_keys"] == []


def test_environ_values_follow_each_request_across_connections(server):
    # The template keeps the values the last request stored, and a request that repeats
    # them skips the store. Two interleaved connections that differ in each such value,
    # an exact repeat, and an app that rewrites its environ: every request must still
    # see exactly its own values.
    fields = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "wsgi.url_scheme",
              "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR", "REMOTE_PORT", "HTTP_HOST")
    a = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    b = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    port_a, port_b = (str(s.getsockname()[1]) for s in (a, b))
    steps = [
        (a, b"GET /environ?one HTTP/1.1\r\nHost: a.example\r\n\r\n",
         ("GET", "/environ", "one", "HTTP/1.1", "http", "a.example", "80", "127.0.0.1", port_a, "a.example")),
        (b, b"POST /environ/%41?two&mutate HTTP/1.0\r\nHost: b.example:8080\r\n"
            b"Connection: keep-alive\r\nContent-Length: 0\r\n\r\n",
         ("POST", "/environ/A", "two&mutate", "HTTP/1.0", "http", "b.example", "8080", "127.0.0.1", port_b,
          "b.example:8080")),
        (b, b"GET /environ?one HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
         ("GET", "/environ", "one", "HTTP/1.0", "http", "127.0.0.1", str(server.port), "127.0.0.1", port_b, None)),
        (a, b"GET /environ?one HTTP/1.1\r\nHost: a.example\r\n\r\n",
         ("GET", "/environ", "one", "HTTP/1.1", "http", "a.example", "80", "127.0.0.1", port_a, "a.example")),
        (a, b"GET /environ?one&mutate HTTP/1.1\r\nHost: a.example\r\n\r\n",
         ("GET", "/environ", "one&mutate", "HTTP/1.1", "http", "a.example", "80", "127.0.0.1", port_a,
          "a.example")),
        (a, b"GET /environ?one HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-Proto: https\r\n\r\n",
         ("GET", "/environ", "one", "HTTP/1.1", "https", "a.example", "443", "127.0.0.1", port_a, "a.example")),
        (b, b"PUT /environ HTTP/1.1\r\nHost: [::1]:81\r\nContent-Length: 0\r\n\r\n",
         ("PUT", "/environ", "", "HTTP/1.1", "http", "[::1]", "81", "127.0.0.1", port_b, "[::1]:81")),
    ]
    with a, b:
        for i, (conn, request, want) in enumerate(steps):
            conn.sendall(request)
            env = json.loads(read_response(conn)[1])
            assert tuple(env.get(f) for f in fields) == want, f"request {i}"
            assert env["none_keys"] == [] and env["has_input"], f"request {i}"


def test_environ_keys_come_and_go_with_each_request(server):
    # A thread builds each environ on the last one when the app neither kept nor
    # changed it (environ/live.rs): the last request's header keys must go, repeats
    # must join only this request's fields, and a changed environ must not come back.
    base = "GET /environ HTTP/1.1\r\nHost: a.example\r\n"
    steps = [
        ("X-A: 1\r\nX-B: 2\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n",
         {"HTTP_X_A": "1", "HTTP_X_B": "2", "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "0"}),
        ("X-B: 3\r\n", {"HTTP_X_B": "3"}),
        ("X-A: 4\r\nX-A: 5\r\n", {"HTTP_X_A": "4,5"}),
        ("", {}),
        ("X-A: 6\r\nContent-Length: 0\r\n", {"HTTP_X_A": "6", "CONTENT_LENGTH": "0"}),
    ]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        for i, (headers, want) in enumerate(steps):
            conn.sendall((base + headers + "\r\n").encode())
            env = json.loads(read_response(conn)[1])
            got = {k: v for k, v in env.items() if k.startswith(("HTTP_X_", "CONTENT_"))}
            assert got == want, f"request {i}"
            assert env["HTTP_HOST"] == "a.example" and env["none_keys"] == [], f"request {i}"
        # Without Host the kept environ loses HTTP_HOST (no placeholder left in it), and
        # the next request with Host gets it back.
        conn.sendall(b"GET /environ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        env = json.loads(read_response(conn)[1])
        assert "HTTP_HOST" not in env and env["none_keys"] == []
        conn.sendall(base.encode() + b"\r\n")
        env = json.loads(read_response(conn)[1])
        assert env["HTTP_HOST"] == "a.example" and env["none_keys"] == []
        conn.sendall(b"GET /environ?mutate HTTP/1.1\r\nHost: a.example\r\nX-A: 7\r\n\r\n")
        read_response(conn)
        conn.sendall(base.encode() + b"\r\n")
        env = json.loads(read_response(conn)[1])
    assert env["SCRIPT_NAME"] == "" and env["SERVER_SOFTWARE"].startswith("ferrule/")
    assert env["SERVER_NAME"] == "a.example" and env["PATH_INFO"] == "/environ"
    assert not [k for k in env if k.startswith("HTTP_X_")]
    assert "mutated" not in env.values()


def test_an_environ_changed_between_requests_is_not_built_on(server):
    # The kept environ is tracked by the garbage collector, so another thread can reach
    # it after its request (here through gc.get_objects()): its version tag is read
    # again before the next request builds on it (environ/live.rs).
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(b"GET /poke-later HTTP/1.1\r\nHost: x\r\nX-Poke-Me: 1\r\n\r\n")
        read_response(conn)
        time.sleep(0.6)
        conn.sendall(b"GET /environ HTTP/1.1\r\nHost: x\r\n\r\n")
        env = json.loads(read_response(conn)[1])
    assert "HTTP_X_POKED" not in env and "HTTP_X_POKE_ME" not in env


def test_an_environ_the_app_keeps_is_never_changed_by_later_requests(server):
    # Only an environ nobody else refers to is built on again (environ/live.rs).
    requests = ["/hold-environ?one", "/hold-environ?two", "/hold-environ?three"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        for i, path in enumerate(requests):
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: h{i}.example\r\nX-Step: {i}\r\n\r\n".encode())
            result = json.loads(read_response(conn)[1])
            if i:
                assert result == {"reused": False, "changed": []}, f"request {i}"


def _connect_from(port, server_port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.settimeout(5)
    s.connect(("127.0.0.1", server_port))
    return s


def test_remote_port_follows_each_connection_when_their_ports_share_a_slot(server):
    # REMOTE_PORT strings are kept per port modulo 64 (environ/strings.rs): two
    # interleaved connections from ports 64 apart take turns in one slot.
    for base in range(41000, 42000, 7):
        try:
            a = _connect_from(base, server.port)
        except OSError:
            continue
        try:
            b = _connect_from(base + 64, server.port)
        except OSError:
            a.close()
            continue
        break
    else:
        pytest.fail("no two free client ports 64 apart in 41000-42063")
    with a, b:
        for conn in (a, b, a, a, b, b, a):
            conn.sendall(b"GET /environ HTTP/1.1\r\nHost: x\r\n\r\n")
            env = json.loads(read_response(conn)[1])
            assert env["REMOTE_PORT"] == str(conn.getsockname()[1])


def test_remote_addr_follows_each_client_address(server):
    # Each thread keeps the last peer address's REMOTE_ADDR string (environ.rs): clients
    # on two loopback addresses take turns.
    conns = []
    for addr in ("127.0.0.2", "127.0.0.1"):
        s = socket.socket()
        s.bind((addr, 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", server.port))
        conns.append(s)
    a, b = conns
    with a, b:
        for conn in (a, b, b, a, b):
            conn.sendall(b"GET /environ HTTP/1.1\r\nHost: x\r\n\r\n")
            env = json.loads(read_response(conn)[1])
            assert env["REMOTE_ADDR"] == conn.getsockname()[0]


def test_environ_is_right_on_every_runner_thread(server):
    # A blocking route at concurrency runs on several runner threads, each with its own
    # template holding the values of the last request it served.
    def one(i):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            host = f"h{i % 3}.example:{8000 + i}"
            s.sendall(f"GET /environ/{i}?sleep&n={i} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            env = json.loads(read_response(s)[1])
            want = (f"/environ/{i}", f"sleep&n={i}", f"h{i % 3}.example", str(8000 + i),
                    str(s.getsockname()[1]), host)
            got = tuple(env[k] for k in ("PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT",
                                         "REMOTE_PORT", "HTTP_HOST"))
            return got == want, env["thread"]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(64)))
    assert all(ok for ok, _ in results)
    assert len({thread for _, thread in results}) > 1


def test_request_objects_the_app_kept_are_not_reused_and_fail_cleanly(server):
    # A finished request's object is reused by the next request only when nothing
    # else refers to it (handler.rs); one the app kept must stay finished.
    for _ in range(3):
        assert get(server, "/hello")[0] == 200
    assert get(server, "/keep")[0] == 200
    status, _, body = get(server, "/keep")
    finished = "this request is already finished"
    assert status == 200
    assert json.loads(body) == {"reused": False, "read": finished, "start_response": finished}


def test_a_request_object_is_not_reused_while_the_app_keeps_any_one_of_its_parts(server):
    # The spare request object goes with its bound start_response (handler.rs): keeping
    # either, the write callable, or the environ (which holds wsgi.input) must stop reuse.
    finished = "this request is already finished"
    for what in ("start", "write", "environ"):
        for _ in range(3):
            assert get(server, "/hello")[0] == 200
        assert get(server, f"/keep-one?{what}")[0] == 200
        status, _, body = get(server, f"/keep-one?{what}")
        assert status == 200
        assert json.loads(body) == {"reused": False, "error": finished}, what


def test_fields_the_app_sends_again_come_out_right_every_time(server):
    # The server remembers the status and header tuples an app passes again (the very
    # same objects) with their checked bytes. Remembered fields that stand in for the
    # server's Server, Date and Content-Length; more fields than it remembers; str
    # subclasses, which it does not remember: each response must carry what its app sent.
    few = ["HTTP/1.1 203 Constant Fields", "Content-Type: text/plain", "Server: mine", "Date: then",
           "Content-Length: 2"]
    many = [f"X-Field-{i}: v{i}" for i in range(12)] + ["Content-Type: text/plain", "Content-Length: 2"]
    queries = ["few", "few", "many", "few", "many", "many", "sub1", "few", "sub2"]
    if server.target == "routes:validated":  # wsgiref.validate wants exact str
        queries = [q for q in queries if not q.startswith("sub")]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        for query in queries:
            s.sendall(f"GET /fields?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while not data.endswith(b"\r\n\r\nok"):
                chunk = s.recv(65536)
                assert chunk, data
                data += chunk
            lines = data.decode("latin-1").split("\r\n")[:-2]
            if query == "few":
                assert lines == few, lines
            elif query == "many":
                assert lines[0] == "HTTP/1.1 200 OK" and lines[1:15] == many, lines
                assert "Server: ferrule" in lines and sum(l.startswith("Date: ") for l in lines) == 1
            else:
                assert lines[:3] == ["HTTP/1.1 200 OK", f"X-Sub: {query}", "Content-Length: 2"], lines


def test_path_info_is_percent_decoded_as_latin1(server):
    _, _, body = get(server, "/environ%2Fx%C3%A9")
    assert json.loads(body)["PATH_INFO"] == "/environ/x\u00c3\u00a9"


def test_content_headers_and_http10(server):
    reply = raw(server.port, b"POST /environ HTTP/1.0\r\nContent-Type: text/x\r\nContent-Length: 2\r\n\r\nhi")
    status, headers, body = parse(reply)
    env = json.loads(body)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert env["CONTENT_TYPE"] == "text/x" and env["CONTENT_LENGTH"] == "2"
    assert "HTTP_CONTENT_TYPE" not in env
    assert headers["connection"] == "close"


def test_input_read_sizes_never_pass_the_body(server):
    _, _, body = get(server, "/read-sizes", "POST", b"abcdefghij")
    assert json.loads(body) == ["abc", "", "defg", "hij", ""]


def test_input_readline_readlines_and_iteration(server):
    _, _, body = get(server, "/lines", "POST", b"first\nsecond line\nthird\nlast")
    assert json.loads(body) == ["first\n", "sec", "ond line\n", "third\n", "last"]
    _, _, body = get(server, "/iterate", "POST", b"a\nb\nc")
    assert json.loads(body) == ["a\n", "b\n", "c"]


def test_chunked_request_body_is_dechunked(server):
    req = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    req += b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: ignored\r\n\r\n"
    status, _, body = parse(raw(server.port, req))
    assert (status, body) == (200, b"hello world")


def test_streaming_input_app_starts_before_the_body_arrives(server, serve):
    # Streaming input is the opt-out of request buffering (tests/e2e/test_buffering.py
    # shows the app answering before the rest of the body is sent).
    streaming = serve(server.target, "--request-buffering", "off")
    with socket.create_connection(("127.0.0.1", streaming.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello")
        import time
        time.sleep(0.3)
        s.sendall(b"world")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert parse(data)[2] == b"helloworld"
    assert streaming.stop() == 0


def test_generator_response_calls_start_response_late_and_is_chunked(server):
    status, headers, body = get(server, "/stream")
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert body == b"one,two,three"


def test_write_callable(server):
    status, _, body = get(server, "/write")
    assert (status, body) == (200, b"written,returned")


def test_list_response_gets_a_content_length(server):
    _, headers, body = get(server, "/echo", "POST", b"12345")
    assert headers["content-length"] == "5" and body == b"12345"
    assert "date" in headers and headers["server"] == "ferrule"


def test_lists_and_tuples_of_any_length_are_sent_with_their_total_length(server):
    # (wsgiref.validate wraps the list in an iterator, which is streamed instead.)
    for query, want in (("list", b"abcdef"), ("tuple", b"abcdef"), ("empty", b""), ("one", b"x")):
        status, headers, body = get(server, f"/seq?{query}")
        assert (status, body) == (200, want), query
        if server.target == "routes:app":
            assert headers["content-length"] == str(len(want)), query


def test_empty_generator_and_204(server):
    status, headers, body = get(server, "/empty-generator")
    assert status == 204 and body == b"" and "content-length" not in headers


def test_head_sends_headers_only(server):
    reply = raw(server.port, b"HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, body = parse(reply)
    assert status == 200 and headers["content-length"] == "13" and body == b""


def test_file_wrapper_real_file_and_bytesio(server):
    status, headers, body = get(server, "/file")
    assert status == 200 and body == server.data
    if "validated" not in server.target:
        # The wrapper itself was returned: its size is known and sendfile sends it.
        assert int(headers["content-length"]) == len(server.data)
    status, _, body = get(server, "/bytesio")
    assert body == b"in memory " * 1000


def test_exc_info_replaces_an_unsent_head(server):
    status, _, body = get(server, "/exc-info")
    assert (status, body) == (503, b"replaced")


def test_latin1_header_values(server):
    _, headers, _ = get(server, "/unicode-header")
    assert headers["x-latin"].encode("latin-1") == "caf\u00e9".encode("latin-1")


def test_keep_alive_and_pipelining_in_order(server):
    reqs = b"".join(f"GET /status?20{i}+OK HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(3))
    reply = raw(server.port, reqs + b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert [int(c) for c in re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)] == [200, 201, 202, 200]


def test_expect_100_continue_only_when_the_app_reads(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"abc")
        assert parse(s.recv(65536))[2] == b"abc"
    # An app that never reads the body sends no 100 Continue.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST /hello HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200 OK")


def test_server_port_without_a_port_in_host_follows_each_request_s_scheme(server):
    # The Host value is cached; its default port must still come from this request's scheme.
    ports = []
    for headers in ("", "X-Forwarded-Proto: https\r\n", ""):
        _, _, body = get(server, "/environ", headers=headers)
        env = json.loads(body)
        ports.append((env["wsgi.url_scheme"], env["SERVER_NAME"], env["SERVER_PORT"]))
    assert ports == [("http", "example.com", "80"), ("https", "example.com", "443"),
                     ("http", "example.com", "80")]
