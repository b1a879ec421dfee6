"""Request buffering (issue 21 point 4, request side): a body is read before the request
takes an app thread, so slow uploads hold buffers, not threads; large bodies spill to an
unlinked temporary file; `--request-buffering off` streams the body to the app."""

import hashlib
import json
import os
import re
import socket
import threading
import time

import pytest

from conftest import booted, children, parse, raw

APP = "buffering_app:app"


def post(path, body, extra=""):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def chunked(path, parts, extra=""):
    data = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{extra}\r\n".encode()
    for p in parts:
        data += f"{len(p):x}\r\n".encode() + p + b"\r\n"
    return data + b"0\r\n\r\n"


def read_response(sock):
    """One response with a Content-Length: (status, body); fails when the server closes
    first (bounded in time by the socket's timeout)."""
    data = b""

    def more():
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        return chunk

    while b"\r\n\r\n" not in data:
        data += more()
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += more()
    return int(head.split()[1]), body


def answer_within(sock, seconds):
    """The response that arrives within `seconds`, or None."""
    sock.settimeout(seconds)
    try:
        return read_response(sock)
    except socket.timeout:
        return None
    finally:
        sock.settimeout(10)


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=10)


# ---- slow bodies do not hold threads ----

def test_slow_body_clients_do_not_keep_other_requests_waiting(serve):
    # 300 clients send a 30-byte body a byte every 100 ms, with 16 app threads. Before
    # buffering each held a thread for its whole upload and /hello waited seconds.
    s = serve(APP, "--threads", "16")
    clients, size = 300, 30
    slow = [connect(s.port) for _ in range(clients)]
    for c in slow:
        c.sendall(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
    latencies = []
    stop = threading.Event()

    def normal():
        with connect(s.port) as c:
            for _ in range(40):  # bounded: 40 requests, or until the uploads end
                if stop.is_set():
                    break
                t = time.monotonic()
                c.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(c) == (200, b"hello")
                latencies.append(time.monotonic() - t)
                time.sleep(0.05)

    probe = threading.Thread(target=normal)
    for i in range(size):
        for c in slow:
            c.sendall(b"abcdefghijklmnopqrstuvwxyz0123"[i:i + 1])
        if i == 3:  # every upload is under way
            probe.start()
        time.sleep(0.1)
    stop.set()
    probe.join(timeout=30)
    assert not probe.is_alive()
    for c in slow:
        assert read_response(c) == (200, b"abcdefghijklmnopqrstuvwxyz0123")
        c.close()
    assert len(latencies) >= 20, latencies
    latencies.sort()
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    assert p95 < 0.1, latencies
    assert s.stop() == 0


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_the_app_runs_once_the_body_is_complete(serve, framing):
    s = serve(APP)
    data = post("/first-byte", b"0123456789") if framing == "length" else chunked("/first-byte", [b"0", b"123456789"])
    cut = data.index(b"\r\n\r\n") + 4 + (1 if framing == "length" else 6)  # the head and the byte "0"
    with connect(s.port) as c:
        c.sendall(data[:cut])
        assert answer_within(c, 1.0) is None  # the app has not been called
        c.sendall(data[cut:])
        status, body = read_response(c)
        assert status == 200 and json.loads(body)["first"] == "0"
    assert s.stop() == 0


def test_buffering_off_streams_the_body_to_the_app(serve):
    s = serve(APP, "--request-buffering", "off")
    with connect(s.port) as c:
        c.sendall(post("/first-byte", b"0123456789")[:-9])
        # The app answers after reading the one byte that has arrived.
        got = answer_within(c, 5.0)
        assert got is not None and json.loads(got[1])["first"] == "0"
    assert s.stop() == 0


def test_expect_100_continue_lets_the_app_decide_first(serve):
    s = serve(APP)
    with connect(s.port) as c:
        c.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        c.settimeout(5)
        interim = c.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        c.sendall(b"hello")
        assert read_response(c) == (200, b"hello")
    assert s.stop() == 0


# ---- a stalled body ----

def test_a_stalled_body_is_closed_with_408_after_the_io_timeout(serve):
    s = serve(APP, "--io-timeout", "1", "--timeout", "30")
    start = time.monotonic()
    with connect(s.port) as c:
        c.sendall(post("/echo", b"0123456789")[:-7])
        c.settimeout(10)
        reply = b""
        while chunk := c.recv(65536):
            reply += chunk
    took = time.monotonic() - start
    assert parse(reply)[0] == 408 and 0.9 < took < 5, (reply, took)
    # The worker still serves.
    assert parse(raw(s.port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))[2] == b"hello"
    assert s.stop() == 0
    assert "sent nothing of its request body for --io-timeout" in s.log()


def test_a_body_that_keeps_coming_is_not_cut_by_the_io_timeout(serve):
    # The timeout is between reads, not for the whole body.
    s = serve(APP, "--io-timeout", "1")
    with connect(s.port) as c:
        body = b"x" * 8
        c.sendall(post("/echo", body)[:-8])
        for b in range(8):
            time.sleep(0.4)
            c.sendall(body[b:b + 1])
        assert read_response(c) == (200, body)
    assert s.stop() == 0


def test_a_slow_upload_under_a_short_timeout_does_not_replace_the_worker(serve):
    # --timeout is for an app that is stuck; a body read ahead is not the app's time.
    s = serve(APP, "--timeout", "2")
    workers = booted(s, 1)
    body = b"0123456789"
    with connect(s.port) as c:
        c.sendall(post("/echo", body)[:-len(body)])
        for i in range(len(body)):  # 5 s in all, 2.5 times the timeout
            time.sleep(0.5)
            c.sendall(body[i:i + 1])
        assert read_response(c) == (200, body)
    assert children(s.proc.pid) == workers
    assert s.stop() == 0
    assert "WORKER TIMEOUT" not in s.log() and "Traceback" not in s.log()


# ---- chunked ----

def test_a_chunked_body_is_read_before_the_app_across_many_reads(serve):
    s = serve(APP)
    parts = [os.urandom(n) for n in (1, 300, 4096, 7, 70000)]
    data = chunked("/sha256", parts, "Connection: close\r\n")
    with connect(s.port) as c:
        # In awkward pieces: inside size lines, data and the last chunk.
        for i in range(0, len(data) - 3, 997):
            c.sendall(data[i:i + 997] if i + 997 < len(data) - 3 else data[i:-3])
            time.sleep(0.005)
        assert answer_within(c, 0.5) is None  # the last chunk is not complete
        c.sendall(data[-3:])
        status, body = read_response(c)
    got = json.loads(body)
    assert status == 200 and got["sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
    assert got["content_length"] is None and got["spilled"] == []
    assert s.stop() == 0


def test_a_chunked_body_over_the_limit_gets_413_before_the_app(serve):
    s = serve(APP, "--limit-request-body", "100")
    with connect(s.port) as c:
        c.sendall(chunked("/first-byte", [b"x" * 60, b"y" * 60])[:-5])
        c.settimeout(5)
        reply = b""
        while chunk := c.recv(65536):
            reply += chunk
    assert parse(reply)[0] == 413
    assert s.stop() == 0
    assert "request body too large" in s.log()


# ---- large bodies spill to a file ----

@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_over_the_buffer_size_spills_to_an_unlinked_file(serve, tmp_path, framing):
    spill = tmp_path / "spill"
    spill.mkdir()
    s = serve(APP, "--request-buffer-size", "65536", env={"TMPDIR": str(spill)})
    body = os.urandom(3 * 1024 * 1024 + 17)
    data = post("/sha256", body) if framing == "length" else \
        chunked("/sha256", [body[i:i + 100000] for i in range(0, len(body), 100000)])
    with connect(s.port) as c:
        for i in range(0, len(data), 256 * 1024):
            c.sendall(data[i:i + 256 * 1024])
            time.sleep(0.01)
        status, reply = read_response(c)
        got = json.loads(reply)
        assert status == 200 and got["length"] == len(body)
        assert got["sha256"] == hashlib.sha256(body).hexdigest()
        assert len(got["spilled"]) == 1 and got["spilled"][0].startswith(str(spill)), got["spilled"]
        # The same connection goes on, with a small body held in memory.
        c.sendall(post("/sha256", b"small"))
        small = json.loads(read_response(c)[1])
        assert small["sha256"] == hashlib.sha256(b"small").hexdigest() and small["spilled"] == []
    assert os.listdir(spill) == []  # nothing left behind
    assert s.stop() == 0


def test_an_unwritable_spill_directory_gives_500_and_a_log_line(serve, tmp_path):
    s = serve(APP, "--request-buffer-size", "1000", env={"TMPDIR": str(tmp_path / "missing")})
    with connect(s.port) as c:
        data = post("/sha256", b"x" * 5000, "Connection: close\r\n")
        c.sendall(data[:-4000])  # the body outgrows the memory bound over several reads
        time.sleep(0.2)
        c.sendall(data[-4000:])
        reply = b""
        while chunk := c.recv(65536):
            reply += chunk
    assert parse(reply)[0] == 500
    assert parse(raw(s.port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))[2] == b"hello"
    assert s.stop() == 0
    assert "cannot create a temporary file for a request body in" in s.log()


# ---- pipelining and input semantics ----

def test_pipelined_requests_after_a_buffered_body(serve):
    s = serve(APP)
    with connect(s.port) as c:
        first = post("/echo", b"first body")
        c.sendall(first[:-4])
        time.sleep(0.2)
        # The rest of the body and two more requests in one send.
        c.sendall(first[-4:] + post("/echo", b"second") + b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := c.recv(65536):
            reply += chunk
    bodies = [part.partition(b"\r\n\r\n")[2] for part in reply.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert bodies == [b"first body", b"second", b"hello"], reply
    assert s.stop() == 0


def test_pipelined_requests_after_a_spilled_body(serve, tmp_path):
    # The spilled body has left the buffer: what follows its head there is the next
    # request, and once that was as long as the body it was taken for the body.
    s = serve(APP, "--request-buffer-size", "1000", env={"TMPDIR": str(tmp_path)})
    first = post("/sha256", b"a" * 2000)
    second = post("/echo", b"b" * 3000, "X-Pad: " + "p" * 500 + "\r\n")
    with connect(s.port) as c:
        c.sendall(first[:-1500])
        time.sleep(0.2)
        c.sendall(first[-1500:] + second + b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := c.recv(65536):
            reply += chunk
    # The three answers may come in one read: split them by their Content-Length.
    got = []
    while reply:
        head, _, rest = reply.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        got.append((int(head.split()[1]), rest[:length]))
        reply = rest[length:]
    assert len(got) == 3, got
    assert json.loads(got[0][1])["sha256"] == hashlib.sha256(b"a" * 2000).hexdigest()
    assert json.loads(got[0][1])["spilled"], "the first body went to a file"
    assert got[1] == (200, b"b" * 3000)
    assert got[2] == (200, b"hello")
    assert s.stop() == 0


def test_an_unread_body_read_ahead_keeps_the_connection(serve):
    # /hello never reads its 500 KB body; it is in memory already, so skipping it costs
    # no read and the connection is reused (the 64 KiB cap is for bytes in the socket).
    s = serve(APP)
    body = b"z" * 500_000
    with connect(s.port) as c:
        data = post("/hello", body)
        c.sendall(data[:-1000])
        time.sleep(0.2)
        c.sendall(data[-1000:])
        assert read_response(c) == (200, b"hello")
        c.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c) == (200, b"hello")
    assert s.stop() == 0


def test_input_lines_of_a_buffered_body(serve):
    s = serve(APP)
    with connect(s.port) as c:
        data = post("/lines", b"a\nbb\n\nlast")
        c.sendall(data[:-6])
        time.sleep(0.1)
        c.sendall(data[-6:])
        status, body = read_response(c)
    assert status == 200 and json.loads(body) == ["a\n", "bb\n", "\n", "last"]
    assert s.stop() == 0


@pytest.mark.parametrize("flag, value", [("--request-buffering", "maybe"), ("--request-buffer-size", "-1"),
                                         ("--request-buffer-size", "1m")])
def test_bad_buffering_values_are_one_line_and_exit_2(flag, value):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "ferrule", "x:app", flag, value], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2
    assert flag in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr


def test_request_buffering_in_a_config_file(serve, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("request_buffering = 'off'\nrequest_buffer_size = 1024\n")
    s = serve(APP, "-c", str(conf))
    with connect(s.port) as c:
        c.sendall(post("/first-byte", b"0123456789")[:-9])
        got = answer_within(c, 5.0)
        assert got is not None and json.loads(got[1])["first"] == "0"
    assert s.stop() == 0
