"""Empty lines before a request line (issue 21, point 1): ignored (RFC 9112 §2.2), but
counted against --limit-request-line, so a client sending nothing else is refused with
414 and closed instead of being buffered and re-parsed without end."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from conftest import children, get, parse, raw, serving, wait_until


def _kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


def _flood(port: int, total: int, seconds: float, result: dict) -> None:
    """Sends up to `total` bytes of CRLF for at most `seconds`, reading what comes back."""
    chunk = b"\r\n" * 32768
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as c:
        c.settimeout(2)
        reply = b""
        sent = 0
        deadline = time.monotonic() + seconds
        while sent < total and time.monotonic() < deadline:
            try:
                sent += c.send(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            except socket.timeout:
                break  # the server stopped reading
        c.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            while chunk_in := c.recv(65536):
                reply += chunk_in
            closed = True
        except ConnectionResetError:
            closed = True  # reset after the answer: the client was still sending
        except socket.timeout:
            closed = False
        result.update(sent=sent, reply=reply, closed=closed, elapsed=time.monotonic() - (deadline - seconds))


def test_a_flood_of_empty_lines_gets_414_and_the_worker_stays_small_and_serving(serve):
    s = serve("routes:app", "--workers", "1")
    (worker,) = wait_until(lambda: [k for k in children(s.proc.pid) if serving(k)])
    assert get(s.port, "/hello") == (200, "Hello, World!")
    peak_before = _kib(worker, "VmHWM")
    results = [{} for _ in range(4)]
    floods = [threading.Thread(target=_flood, args=(s.port, 50 << 20, 10.0, r)) for r in results]
    for t in floods:
        t.start()
    # Other requests are answered while the floods go on.
    for _ in range(5):
        started = time.monotonic()
        assert get(s.port, "/hello", timeout=5) == (200, "Hello, World!")
        assert time.monotonic() - started < 2
    for t in floods:
        t.join(timeout=20)
        assert not t.is_alive()
    for r in results:
        assert r["closed"], r
        assert parse(r["reply"])[0] == 414, r["reply"][:200]
        # Refused after about --limit-request-line bytes: the rest never left the client's
        # socket buffers (a few MB at most), nowhere near the 50 MB it had to send.
        assert r["sent"] < 20 << 20, r["sent"]
        assert r["elapsed"] < 10, r
    grown = _kib(worker, "VmHWM") - peak_before
    assert grown < 16 * 1024, f"worker peak RSS grew by {grown} KiB"
    assert _kib(worker, "VmRSS") < peak_before + 16 * 1024
    assert "request line too long" in s.log()


def test_empty_lines_before_a_request_are_ignored_within_the_limit(serve):
    s = serve("routes:app", "--limit-request-line", "60")
    line = b"GET /hello HTTP/1.1"  # 19 bytes
    # 20 empty lines (40 bytes) and the request line: 59 bytes, served.
    assert parse(raw(s.port, b"\r\n" * 20 + line + b"\r\nHost: x\r\n\r\n"))[0] == 200
    # One more empty line and the same request line pass the limit.
    status, headers, _ = parse(raw(s.port, b"\r\n" * 21 + line + b"\r\nHost: x\r\n\r\n"))
    assert (status, headers["connection"]) == (414, "close")
    # Between pipelined requests (CRLF after a body, as some clients send) too.
    two = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\r\n" + line + b"\r\nHost: x\r\n\r\n"
    assert raw(s.port, two).count(b"HTTP/1.1 200 OK") == 2
