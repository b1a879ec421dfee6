"""--log-syslog (gunicorn's settings): the error and access lines reach syslog servers the
tests start — listeners checking the exact bytes (RFC 3164 as gunicorn sends it, RFC 5424,
UDP datagrams, TCP octet counting, unix datagrams) and a real rsyslogd —, a syslog server
stopped mid-run costs no request (drops reported in the error log), and TCP is made again
when the server comes back."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import APPS, booted, free_port, get, raw, reaped, wait_for_port, wait_until

LOCAL3 = 19  # --log-syslog-facility local3
INFO, WARNING = 6, 4


class Udp:
    """A UDP syslog server: each datagram as bytes."""

    def __init__(self, port: int = 0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.got: list[bytes] = []

    def until(self, cond, timeout=15.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while not cond(self.got):
            assert time.monotonic() < deadline, f"not received in {timeout}s: {self.got[-5:]}"
            try:
                self.got.append(self.sock.recv(65536))
            except socket.timeout:
                pass
        return self.got

    def close(self):
        self.sock.close()


class UnixDgram(Udp):
    def __init__(self, path: Path):  # noqa: super().__init__ binds UDP
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.got = []


class Tcp:
    """A TCP syslog server reading octet-counted frames (RFC 6587) on each connection
    (each process has its own); with `unix=PATH`, a unix stream server reading
    NUL-terminated messages instead."""

    def __init__(self, port: int = 0, unix: Path | None = None):
        if unix is None:
            self.listener = socket.create_server(("127.0.0.1", port))
            self.port = self.listener.getsockname()[1]
        else:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(str(unix))
            self.listener.listen()
        self.nul = unix is not None
        self.got: list[bytes] = []
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._read, args=(c,), daemon=True).start()

    def _read(self, c):
        buf = b""
        while True:
            try:
                data = c.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while True:
                if self.nul:
                    msg, sep, rest = buf.partition(b"\x00")
                    if not sep:
                        break
                else:
                    size, sep, rest = buf.partition(b" ")
                    if not sep:
                        break
                    assert size.isdigit(), buf[:80]
                    if len(rest) < int(size):
                        break
                    msg, rest = rest[:int(size)], rest[int(size):]
                with self.lock:
                    self.got.append(msg)
                buf = rest

    def until(self, cond, timeout=15.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                got = list(self.got)
            if cond(got):
                return got
            assert time.monotonic() < deadline, f"not received in {timeout}s: {got[-5:]}"
            time.sleep(0.05)

    def close(self):
        # shutdown wakes the accepting thread (close alone leaves the port bound under it).
        for sock in [self.listener, *self.conns]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def has(word: bytes, n: int = 1):
    return lambda got: sum(word in m for m in got) >= n


def pri(severity: int, facility: int = LOCAL3) -> bytes:
    return b"<%d>" % (facility * 8 + severity)


def test_rfc3164_over_udp_is_gunicorns_bytes_from_master_and_workers(serve):
    rx = Udp()
    s = serve("logging_app:app", "-w", "2", "--log-syslog", "--log-syslog-to", f"udp://127.0.0.1:{rx.port}",
              "--log-syslog-facility", "local3", "--log-syslog-prefix", "shop")
    workers = booted(s, 2)
    assert get(s.port, "/log?msg=py")[0] == 200
    assert raw(s.port, b"NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400")
    got = rx.until(lambda g: has(b"/log?msg=py HTTP")(g) and has(b"warning py")(g) and has(b"invalid request")(g)
                   and has(b"Booting worker", 2)(g))
    # The master's lines, each worker's (its own sender after the fork), Python's.
    master = s.proc.pid
    assert pri(INFO) + b"gunicorn.shop.error: [%d] Listening at: http://127.0.0.1:%d (%d)\x00" \
        % (master, s.port, master) in got
    for pid in workers:
        assert any(m.startswith(pri(INFO) + b"gunicorn.shop.error: [%d] Booting worker with pid: %d" % (pid, pid))
                   for m in got), got
    warning = next(m for m in got if b"warning py" in m)
    assert re.fullmatch(re.escape(pri(WARNING)) + rb"gunicorn\.shop\.error: \[(\d+)\] warning py from \1\x00",
                        warning), warning
    assert int(re.search(rb"\[(\d+)\]", warning).group(1)) in workers
    assert not any(b"debug py" in m for m in got)  # --log-level info
    invalid = next(m for m in got if b"invalid request" in m)
    assert invalid.startswith(pri(WARNING) + b"gunicorn.shop.error: [")
    # No --access-logfile: access lines go to syslog anyway, as gunicorn sends them.
    access = next(m for m in got if b"shop.access:" in m and b"/log?msg=py" in m)
    assert re.fullmatch(re.escape(pri(INFO)) + rb"gunicorn\.shop\.access: \[(\d+)\] 127\.0\.0\.1 - - \[[^]]+\] "
                        rb"\"GET /log\?msg=py HTTP/1\.1\" 200 6 \"-\" \"-\"\x00", access), access
    assert s.out() == ""
    # The master's last line goes out before it exits.
    assert s.stop() == 0
    rx.until(has(b"gunicorn.shop.error: [%d] Shutting down: Master" % master))


def test_rfc5424_over_tcp_is_octet_counted(serve, tmp_path):
    rx = Tcp()
    s = serve("logging_app:app", "--log-syslog", "--log-syslog-to", f"tcp://127.0.0.1:{rx.port}",
              "--log-syslog-format", "rfc5424", "--access-logfile", "-")
    assert get(s.port, "/")[0] == 200
    got = rx.until(lambda g: has(b".access ")(g) and has(b"Booting worker")(g))
    stamp, host = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", socket.gethostname().encode()
    access = next(m for m in got if b".access " in m)
    # The app's name is the ident's middle (gunicorn's proc_name default): logging_app.app.
    assert re.fullmatch(rb"<14>1 " + stamp + rb" " + re.escape(host) + rb" gunicorn\.logging_app\.app\.access "
                        rb"(\d+) - - 127\.0\.0\.1 - - \[[^]]+\] \"GET / HTTP/1\.1\" 200 5 \"-\" \"-\"",
                        access), access
    boot = next(m for m in got if b"Booting worker" in m)
    assert re.fullmatch(rb"<14>1 " + stamp + rb" \S+ gunicorn\.logging_app\.app\.error (\d+) - - "
                        rb"Booting worker with pid: \1", boot), boot
    # Beside syslog, the access log file (here stdout) still gets its line.
    wait_until(lambda: '"GET / HTTP/1.1" 200' in s.out())


@pytest.mark.parametrize("suffix", ["", "#dgram"])
def test_unix_datagram_socket(serve, tmp_path, suffix):
    path = tmp_path / "log.sock"
    rx = UnixDgram(path)
    s = serve("logging_app:app", "--log-syslog", "--log-syslog-to", f"unix://{path}{suffix}",
              "--log-syslog-facility", "daemon", "--disable-redirect-access-to-syslog",
              "--access-logfile", "-")
    assert get(s.port, "/log?msg=unix")[0] == 200
    got = rx.until(has(b"warning unix"))
    assert any(m.startswith(b"<28>gunicorn.logging_app.app.error: [") and m.endswith(b"warning unix from %s\x00"
               % m.split(b"[")[1].split(b"]")[0]) for m in got), got
    # --disable-redirect-access-to-syslog: the access line is in its file only.
    wait_until(lambda: "GET /log?msg=unix" in s.out())
    get(s.port, "/log?msg=after")
    rx.until(has(b"warning after"))
    assert not any(b".access:" in m for m in rx.got)


@pytest.mark.parametrize("suffix", ["", "#stream"])
def test_unix_stream_socket_messages_end_with_a_nul(serve, tmp_path, suffix):
    # Without #TYPE a stream-only socket is found after the datagram try fails, as Python's
    # SysLogHandler does.
    path = tmp_path / "log.sock"
    rx = Tcp(unix=path)
    s = serve("logging_app:app", "--log-syslog", "--log-syslog-to", f"unix://{path}{suffix}")
    assert get(s.port, "/log?msg=stream")[0] == 200
    got = rx.until(lambda g: has(b"GET /log?msg=stream")(g) and has(b"Booting worker")(g))
    assert all(re.match(rb"<1[0-5]>gunicorn\.logging_app\.app\.(error|access): \[\d+\] [^\x00]+$", m) for m in got), got
    assert any(re.fullmatch(rb"<14>gunicorn\.logging_app\.app\.access: \[\d+\] 127\.0\.0\.1 - - \[[^]]+\] "
                            rb"\"GET /log\?msg=stream HTTP/1\.1\" 200 6 \"-\" \"-\"", m) for m in got), got
    rx.close()


def test_a_python_hook_logs_to_syslog_through_server_log(serve, tmp_path):
    rx = Udp()
    conf = tmp_path / "hooks.py"
    conf.write_text("def when_ready(server):\n    server.log.error('ready hook says %s', 'hi')\n")
    serve("logging_app:app", "-c", str(conf), "--log-syslog", "--log-syslog-to", f"udp://127.0.0.1:{rx.port}")
    got = rx.until(has(b"ready hook says hi"))
    assert any(m.startswith(b"<11>gunicorn.logging_app.app.error: [") for m in got if b"hook says" in m)


RUN_SCRIPT = """
import ferrule

def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]

ferrule.run(app, bind="127.0.0.1:{port}", syslog=True, syslog_addr="udp://127.0.0.1:{syslog}",
            syslog_format="rfc5424")
"""


def test_ferrule_run_sends_to_syslog_with_the_name_ferrule(tmp_path):
    rx = Udp()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", RUN_SCRIPT.format(port=port, syslog=rx.port)])
    with reaped(proc):
        wait_for_port(port, proc)
        assert get(port, "/run")[0] == 200
        got = rx.until(has(b"GET /run "))
        access = next(m for m in got if b"GET /run " in m)
        assert re.match(rb"<14>1 \S+ \S+ gunicorn\.ferrule\.access %d - - 127\.0\.0\.1 - - " % proc.pid, access), access
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def requests_keep_answering(port: int, n: int, within: float, word: str = "n") -> None:
    """n requests (/?WORD=i), each answered; all of them within `within` seconds."""
    started = time.monotonic()
    for i in range(n):
        assert get(port, f"/?{word}={i}", timeout=5)[0] == 200
    assert time.monotonic() - started < within


def test_a_tcp_server_stopped_mid_run_costs_no_request_and_is_reconnected(serve):
    rx = Tcp()
    s = serve("logging_app:app", "--threads", "4", "--log-syslog", "--log-syslog-to", f"tcp://127.0.0.1:{rx.port}")
    requests_keep_answering(s.port, 5, 10)
    rx.until(has(b'"GET /?n=4 ', 1))
    rx.close()
    # While it is down: requests keep being answered, quickly, until the sender has found
    # it cannot connect (bounded: 2,000 requests, 20 s).
    started, down = time.monotonic(), 0
    while "syslog: cannot connect to" not in s.log():
        assert get(s.port, f"/?down={down}", timeout=5)[0] == 200
        down += 1
        assert down < 2000 and time.monotonic() - started < 20, s.log()
    requests_keep_answering(s.port, 20, 10, "down")  # /?down=0..19 again, while it is down
    log = s.log()
    assert f"[WARNING] syslog: cannot connect to tcp://127.0.0.1:{rx.port} (Connection refused" in log, log
    back = Tcp(rx.port)
    requests_keep_answering(s.port, 5, 10, "back")
    # Made again: lines arrive on the new connection, and the lines of the requests made
    # while it was down waited in the queue (those written into the dead connection before
    # the sender saw it fail are lost: a few at most).
    got = back.until(has(b'"GET /?back=4 '), timeout=20)
    assert sum(b'"GET /?down=' in m for m in got) >= down + 20 - 5, (down, len(got))
    wait_until(lambda: f"[INFO] syslog: connected to tcp://127.0.0.1:{rx.port} again" in s.log())
    assert s.proc.poll() is None


def test_a_udp_server_stopped_mid_run_drops_are_counted_and_reported(serve):
    rx = Udp()
    port = rx.port
    s = serve("logging_app:app", "--log-syslog", "--log-syslog-to", f"udp://127.0.0.1:{port}")
    requests_keep_answering(s.port, 3, 10)
    rx.until(has(b'"GET /?n=2 '))
    rx.close()
    # Nothing listens: the kernel answers ICMP port unreachable, so sends fail (drops).
    requests_keep_answering(s.port, 40, 15)
    reported = wait_until(lambda: re.search(r"\[WARNING\] (\d+) syslog lines? dropped since [-\d: +]+: "
                                            rf"udp://127\.0\.0\.1:{port}: Connection refused", s.log()), timeout=20)
    assert int(reported.group(1)) >= 1
    back = Udp(port)
    requests_keep_answering(s.port, 3, 10)
    back.until(has(b'"GET /?n=2 '))


def test_a_process_stopping_while_the_server_is_down_waits_once_and_reports_once(serve):
    port = free_port()  # nothing listens
    s = serve("logging_app:app", "--log-syslog", "--log-syslog-to", f"tcp://127.0.0.1:{port}")
    requests_keep_answering(s.port, 3, 10)
    wait_until(lambda: s.log().count("syslog: cannot connect to") == 2)  # the master, the worker
    started = time.monotonic()
    assert s.stop() == 0
    assert time.monotonic() - started < 8
    reports = re.findall(r"\[(\d+)\] \[WARNING\] \d+ syslog lines? dropped since [-\d: +]+: still queued when the log "
                         rf"was closed: tcp://127\.0\.0\.1:{port}: Connection refused", s.log())
    assert sorted(reports) == sorted(set(reports)) and len(reports) == 2, s.log()


def test_a_bad_syslog_setting_is_one_line_and_exit_2():
    def run(*args):
        return subprocess.run([sys.executable, "-m", "ferrule", "logging_app:app", "--check-config", *args],
                              cwd=APPS, capture_output=True, text=True, timeout=30)
    for args, words in [
        (["--log-syslog", "--log-syslog-to", "localhost:514"], "log-syslog-to: \"localhost:514\" does not start with"),
        (["--log-syslog-to", "tcp://host:port"], "log-syslog-to: \"tcp://host:port\" has \"port\" as its port"),
        (["--log-syslog", "--log-syslog-facility", "local9"], "log-syslog-facility must be one of auth, authpriv"),
        (["--log-syslog-format", "json"], "argument --log-syslog-format: invalid choice: 'json'"),
    ]:
        r = run(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("ferrule: error: "), (args, r.stderr)
        assert words in lines[0], lines[0]


RSYSLOG = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None)


@pytest.fixture
def rsyslog(tmp_path):
    """rsyslogd in a temp dir, listening on loopback UDP and TCP, writing every message to a file."""
    if RSYSLOG is None:
        pytest.skip("rsyslogd is not installed (make test installs the Debian package rsyslog)")
    udp, tcp = free_port(), free_port()
    out = tmp_path / "messages.log"
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(f"""
global(workDirectory="{tmp_path}")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{udp}")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
template(name="t" type="string"
         string="%syslogfacility-text%.%syslogseverity-text% app=%app-name% proc=%procid% msg=%msg%\\n")
*.* action(type="omfile" file="{out}" template="t")
""")
    proc = subprocess.Popen([RSYSLOG, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslog.pid")],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "rsyslog.err", "wb"))
    try:
        for port in (tcp,):
            wait_until(lambda: _listening(port) or proc.poll() is not None, timeout=15)
        assert proc.poll() is None, (tmp_path / "rsyslog.err").read_text()
        yield udp, tcp, out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("fmt, transport", [("rfc3164", "udp"), ("rfc5424", "tcp"), ("rfc3164", "tcp")])
def test_rsyslog_receives_error_and_access_lines(serve, rsyslog, fmt, transport):
    udp, tcp, out = rsyslog
    port = udp if transport == "udp" else tcp
    s = serve("logging_app:app", "--log-syslog", "--log-syslog-to", f"{transport}://127.0.0.1:{port}",
              "--log-syslog-format", fmt, "--log-syslog-facility", "local3", "--log-syslog-prefix", "shop")
    assert get(s.port, f"/log?msg={fmt}")[0] == 200
    text = wait_until(lambda: out.exists() and f"GET /log?msg={fmt}" in out.read_text()
                      and f"warning {fmt}" in out.read_text() and out.read_text())
    lines = text.splitlines()
    access = next(x for x in lines if f"GET /log?msg={fmt}" in x)
    warning = next(x for x in lines if f"warning {fmt}" in x)
    assert access.startswith("local3.info app=gunicorn.shop.access "), access
    assert warning.startswith("local3.warning app=gunicorn.shop.error "), warning
    if fmt == "rfc5424":
        # The pid is RFC 5424's PROCID; the message is the line alone.
        assert re.search(r" proc=(\d+) msg=warning rfc5424 from \1$", warning), warning
    else:
        # gunicorn's: the tag, then "[PID] " in the message (rsyslog keeps the space after "tag:").
        assert re.search(r" proc=- msg= \[(\d+)\] warning rfc3164 from \1$", warning), warning
    assert "\x00" not in text and "#000" not in text
