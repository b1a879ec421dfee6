"""What --timeout measures: time in the app with no progress (before the first byte of
the answer, or between two blocks of a streamed one). Waits on the client's socket are
--io-timeout's business, and a stream that keeps producing blocks is never cut. Real
processes, real sockets; every loop bounded in count and time."""

from __future__ import annotations

import socket
import time

import pytest

from conftest import booted, children

TIMEOUT = ["-w", "1", "--timeout", "3", "--graceful-timeout", "2"]


def same_worker(s, old):
    """The master still has the one worker it had, and nothing timed out."""
    assert children(s.proc.pid) == old
    assert "WORKER TIMEOUT" not in s.log() and "answered 500" not in s.log()


# Read ahead before the app runs (the default), or by the app as it arrives.
BUFFERING = pytest.mark.parametrize("buffering", ["on", "off"])


@BUFFERING
def test_a_client_sending_its_body_slowly_does_not_time_out(serve, buffering):
    s = serve("timeout_app:app", *TIMEOUT, "--request-buffering", buffering)
    old = booted(s, 1)
    body = b"0123456789ab"
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as c:
        c.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        started = time.monotonic()
        for b in body:  # 12 bytes over 6 s: twice --timeout
            time.sleep(0.5)
            c.sendall(bytes([b]))
        got = b""
        while chunk := c.recv(65536):
            got += chunk
    assert time.monotonic() - started >= 6
    assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(f"{old[0]} {len(body)}".encode()), got
    same_worker(s, old)


def test_a_slow_reader_of_a_streamed_answer_does_not_time_out(serve):
    s = serve("timeout_app:app", *TIMEOUT)
    old = booted(s, 1)
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    c.settimeout(15)
    c.connect(("127.0.0.1", s.port))
    c.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    started, got = time.monotonic(), bytearray()
    deadline = started + 40
    while time.monotonic() < deadline:  # about 1.3 MB/s: 12 MiB takes ~9 s
        chunk = c.recv(128 * 1024)
        if not chunk:
            break
        got += chunk
        time.sleep(0.1)
    c.close()
    head, _, body = bytes(got).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    assert time.monotonic() - started > 4
    # Chunked: 96 blocks of 128 KiB and the last chunk.
    assert body.count(b"x") == 96 * 128 * 1024 and body.endswith(b"0\r\n\r\n")
    same_worker(s, old)


def test_an_event_stream_longer_than_the_timeout_is_not_cut(serve):
    s = serve("timeout_app:app", *TIMEOUT)
    old = booted(s, 1)
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as c:
        c.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        started, got = time.monotonic(), b""
        while chunk := c.recv(65536):
            got += chunk
    assert time.monotonic() - started >= 8
    assert all(f"data: {i}\n\n".encode() in got for i in range(8)) and got.endswith(b"0\r\n\r\n"), got
    same_worker(s, old)


@BUFFERING
def test_an_app_stuck_before_its_answer_still_times_out_after_a_slow_body(serve, buffering):
    """The slow body does not count; the app's own 30 s sleep does."""
    s = serve("timeout_app:app", *TIMEOUT, "--request-buffering", buffering)
    booted(s, 1)
    with socket.create_connection(("127.0.0.1", s.port), timeout=20) as c:
        c.sendall(b"POST /read-then-stall HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
        for b in b"abcd":
            time.sleep(0.5)
            c.sendall(bytes([b]))
        started = time.monotonic()
        got = b""
        while chunk := c.recv(65536):
            got += chunk
    waited = time.monotonic() - started
    assert got.startswith(b"HTTP/1.1 500"), got
    assert 2.5 <= waited < 5, waited
    # The worker logs the count once the 500s are written: the client may see its 500
    # first (bounded wait for the line).
    deadline = time.monotonic() + 5
    while "stuck in the app for more than 3s" not in s.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "stuck in the app for more than 3s" in s.log()
