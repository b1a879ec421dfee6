"""Response buffering (issue 21, point 4): a complete answer a slow client does not take
at once is written by the server, so a slow reader holds a buffer, not an app thread.

The slow clients set a small receive buffer and announce an Ethernet-sized MSS (1460):
over loopback's 64 KiB MSS the server's socket would take megabytes at once and never
be full. With MSS 1460 it takes about 75 KB, so a 256 KiB answer has to wait.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import APPS, booted, children, parse, wait_until

sys.path.insert(0, str(APPS))
import bigbody  # noqa: E402

SIZE = 256 * 1024
#: A slow reader takes this much per turn (every READ_EVERY seconds).
READ_STEP = 4096
READ_EVERY = 0.1


def slow_client(port: int, path: str, extra: str = "") -> socket.socket:
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
    c.settimeout(10)
    c.connect(("127.0.0.1", port))
    c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    return c


def body_of(reply: bytes) -> bytes:
    return reply.partition(b"\r\n\r\n")[2]


def quick(port: int) -> float:
    """Seconds a normal request takes to be answered."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := c.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"ok"), reply
    return time.monotonic() - start


def read_slowly(socks, length: int, deadline: float) -> dict:
    """Reads READ_STEP bytes from each socket every READ_EVERY seconds until each has
    a head and `length` body bytes, the peer closes, or the deadline passes."""
    got = {s: b"" for s in socks}
    left = set(socks)
    for s in socks:
        s.setblocking(False)
    while left and time.monotonic() < deadline:
        for s in list(left):
            try:
                chunk = s.recv(READ_STEP)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            got[s] += chunk
            if not chunk or len(body_of(got[s])) >= length:
                left.discard(s)
        time.sleep(READ_EVERY)
    return got


def test_slow_readers_hold_buffers_and_other_requests_are_answered_at_once(serve):
    # 16 threads: before the buffering, the first 16 slow readers held all of them.
    # --io-timeout 3 is shorter than a slow reader's whole transfer (about 7 s): it
    # counts from the last write that made progress.
    s = serve("bigbody:app", "--threads", "16", "--io-timeout", "3")
    clients = [slow_client(s.port, f"/list?n={SIZE}") for _ in range(300)]
    try:
        time.sleep(0.5)  # every answer is made and waits for its reader
        waits = []
        for _ in range(20):
            waits.append(quick(s.port))
            time.sleep(0.05)
        got = read_slowly(clients, SIZE, time.monotonic() + 60)
        waits.append(quick(s.port))
    finally:
        for c in clients:
            c.close()
    assert max(waits) < 0.1, waits
    want = bigbody.digest(SIZE)
    intact = [hashlib.sha256(body_of(r)).hexdigest() == want for r in got.values()]
    assert all(intact), f"{intact.count(False)} of 300 bodies incomplete or wrong"
    assert all(r.startswith(b"HTTP/1.1 200 OK") for r in got.values())


def test_a_reader_that_stops_reading_is_closed_after_io_timeout(serve):
    s = serve("bigbody:app", "--threads", "1", "--io-timeout", "1", "--access-logfile", "-")
    c = slow_client(s.port, f"/list?n={SIZE}")
    try:
        time.sleep(0.3)
        # The one thread is free: the stalled reader holds only a buffer.
        assert quick(s.port) < 0.1
        time.sleep(2.5)  # --io-timeout 1, and the sweep runs every 0.5 s
        got = read_slowly([c], SIZE, time.monotonic() + 10)[c]
    finally:
        c.close()
    assert got.startswith(b"HTTP/1.1 200 OK")
    assert len(body_of(got)) < SIZE, "the whole answer went to a client that did not read"
    # The access log line is written when the app finished, as gunicorn does.
    wait_until(lambda: f'"GET /list?n={SIZE} HTTP/1.1" 200 {SIZE}' in s.out(), timeout=5)


def test_keep_alive_and_pipelined_requests_after_a_buffered_answer(serve):
    s = serve("bigbody:app", "--threads", "1")
    c = slow_client(s.port, f"/list?n={SIZE}")
    try:
        # Pipelined behind it: answered after the buffered answer, in order.
        c.sendall(b"GET /threads HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        assert quick(s.port) < 0.1
        c.settimeout(10)
        first = b""
        while len(body_of(first)) < SIZE:
            first += c.recv(65536)
        rest = first[first.index(b"\r\n\r\n") + 4 + SIZE:]
        while not rest.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in rest:
            rest += c.recv(65536)
        status, headers, _ = parse(rest)
        while len(body_of(rest)) < int(headers["content-length"]):
            rest += c.recv(65536)
        assert status == 200 and body_of(rest).isdigit()
        assert hashlib.sha256(body_of(first)[:SIZE]).hexdigest() == bigbody.digest(SIZE)
        # And the connection serves a next request.
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while not reply.endswith(b"ok"):
            chunk = c.recv(65536)
            assert chunk, "closed after a buffered answer"
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 OK")
    finally:
        c.close()


def test_a_close_answer_closes_after_its_buffered_write(serve):
    s = serve("bigbody:app", "--threads", "1")
    c = slow_client(s.port, f"/list?n={SIZE}", "Connection: close\r\n")
    try:
        time.sleep(0.3)
        assert quick(s.port) < 0.1
        got = b""
        while chunk := c.recv(65536):  # ends: the server closes after the last byte
            got += chunk
    finally:
        c.close()
    assert parse(got)[1]["connection"] == "close"
    assert hashlib.sha256(body_of(got)).hexdigest() == bigbody.digest(SIZE)


@pytest.mark.parametrize("path, args", [
    (f"/list?n={SIZE}", ["--response-buffer-size", "65536"]),  # above the bound
    (f"/stream?n={SIZE}", []),  # a generator's blocks
])
def test_answers_outside_the_rule_are_written_by_the_thread_as_before(serve, path, args):
    s = serve("bigbody:app", "--threads", "1", *args)
    c = slow_client(s.port, path)
    try:
        time.sleep(0.3)
        # The one thread still writes the slow reader's answer: the normal request waits.
        waited = []
        other = threading.Thread(target=lambda: waited.append(quick(s.port)))
        other.start()
        time.sleep(0.5)
        assert not waited, "answered while the thread was writing"
        got = read_slowly([c], SIZE, time.monotonic() + 30)[c]
        other.join(30)
        assert waited and waited[0] > 0.4
    finally:
        c.close()
    status, _, body = parse(got)
    assert status == 200 and hashlib.sha256(body).hexdigest() == bigbody.digest(SIZE)


def test_a_slow_reader_of_a_buffered_answer_does_not_trip_the_timeout(serve):
    # Before the buffering the app's thread waited on this reader for about 6 s, and
    # --timeout 2 counted that wait: the worker was replaced, its stacks dumped.
    s = serve("bigbody:app", "-w", "1", "--timeout", "2")
    worker = booted(s, 1)
    c = slow_client(s.port, f"/list?n={SIZE}")
    try:
        got = read_slowly([c], SIZE, time.monotonic() + 30)[c]
    finally:
        c.close()
    assert hashlib.sha256(body_of(got)).hexdigest() == bigbody.digest(SIZE)
    assert children(s.proc.pid) == worker
    assert "WORKER TIMEOUT" not in s.log() and "answered 500" not in s.log()


def test_a_graceful_stop_waits_for_buffered_answers(serve):
    s = serve("bigbody:app", "--threads", "2")
    clients = [slow_client(s.port, f"/list?n={SIZE}") for _ in range(5)]
    try:
        time.sleep(0.3)
        s.proc.send_signal(signal.SIGTERM)
        got = read_slowly(clients, SIZE, time.monotonic() + 30)
    finally:
        for c in clients:
            c.close()
    want = bigbody.digest(SIZE)
    assert all(hashlib.sha256(body_of(r)).hexdigest() == want for r in got.values())
    assert s.proc.wait(timeout=30) == 0


@pytest.mark.parametrize("args, words", [
    (["--response-buffer-size", "-1"], "must be an integer >= 0"),
    (["--response-buffer-size", "1M"], "must be an integer >= 0"),
])
def test_a_bad_response_buffer_size_is_one_line_and_exit_2(args, words):
    r = subprocess.run([sys.executable, "-m", "ferrule", "bigbody:app", "--chdir", str(APPS), *args],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and words in r.stderr, r.stderr


def test_a_bad_response_buffer_size_in_a_config_file_is_one_line_and_exit_2(tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("response_buffer_size = 'lots'\n")
    r = subprocess.run([sys.executable, "-m", "ferrule", "bigbody:app", "--chdir", str(APPS), "-c", str(conf)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "response_buffer_size" in r.stderr and len(r.stderr.strip().splitlines()) == 1, \
        r.stderr
