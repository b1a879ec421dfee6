"""Logging under faults and from Python: a closed pipe or a full disk under the error
and access logs never takes a request or a process down (lost lines are counted and
reported once writing works again), and Python logging's ``gunicorn.error`` reaches
the error log (the Flask recipe), in the master, the workers and ``ferrule.run``."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import APPS, booted, children, free_port, get, raw, reaped, serving, wait_for_port, wait_until


# A closed stdout and stderr ------------------------------------------------------------

#: Hooks that print to stdout in the master and in each worker: what they print waits
#: in Python's buffer, and the flush at exit meets the closed pipe.
PRINTING_HOOKS = """
def when_ready(server):
    print("ready " * 100)

def post_fork(server, worker):
    print("forked " * 100)
"""


def start_piped(tmp_path, *args, env=None):
    """Starts ferrule with stdout and stderr into pipes whose read ends are closed after
    the first line, as `ferrule app 2>&1 | head -1` does."""
    port = free_port()
    conf = tmp_path / "hooks.conf.py"
    conf.write_text(PRINTING_HOOKS)
    cmd = [sys.executable, "-m", "ferrule", "logging_app:app", "-b", f"127.0.0.1:{port}", "--chdir", str(APPS),
           "-c", str(conf), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stderr.readline()
    proc.stderr.close()
    proc.stdout.close()
    assert b"[INFO]" in first, first
    return proc, port


def all_ok(port, n, path="/"):
    statuses = [get(port, f"{path}?n={i}")[0] for i in range(n)]
    assert statuses == [200] * n


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_a_closed_stdout_and_stderr_never_crash_the_master_or_a_worker(tmp_path, buffered):
    # Buffered, the hooks' prints meet the closed pipe when Python flushes at exit (a
    # worker's os._exit, the master's exit status); unbuffered, in the print itself.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    proc, port = start_piped(tmp_path, "-w", "2", "--access-logfile", "-", env=env)
    with reaped(proc):
        wait_for_port(port, proc)

        def workers():
            kids = children(proc.pid)
            return len(kids) == 2 and all(serving(k) for k in kids) and kids

        old = wait_until(workers)
        # Each request writes an access line to the closed stdout; the master and the
        # workers write error-log lines to the closed stderr; the app logs and prints.
        for path in ("/", "/log", "/print"):
            all_ok(port, 10, path)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: (new := workers()) and not set(new) & set(old))
        for path in ("/", "/log", "/print"):
            all_ok(port, 10, path)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        # No worker outlived its master (a worker whose exit flush raised used to run on).
        assert not children(proc.pid)


def test_a_closed_stderr_does_not_change_the_exit_status_of_a_failed_start():
    """A bad setting exits 2 with its one line even when stderr leads nowhere (not 1
    from a BrokenPipeError, not 120 from the flush at exit)."""
    cmd = [sys.executable, "-m", "ferrule", "proc:app", "--chdir", str(APPS), "--workers", "0"]
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run(cmd, stdout=w, stderr=w, timeout=30)
    finally:
        os.close(w)
    assert proc.returncode == 2


# A full disk ----------------------------------------------------------------------------

@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs, or a skip where mounting is not allowed (not root)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs, logs):
    """Uses up every byte: the rest of each log file's last page, then all free pages."""
    for log in logs:
        slack = -log.stat().st_size % 4096
        with open(log, "ab") as f:
            f.write(b"\n" * slack)
    fd = os.open(fs / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"x" * 65536):
            pass
    except OSError as exc:
        assert exc.errno == 28
    finally:
        os.close(fd)


def lost(log_text, what):
    m = re.findall(rf"\[WARNING\] (\d+) {what} lines? lost since [-0-9: +]+: (.*)", log_text)
    return [(int(n), reason) for n, reason in m]


def test_a_full_disk_loses_log_lines_counted_and_reported_when_space_returns(small_fs, tmp_path):
    errors, access, stdout = small_fs / "error.log", small_fs / "access.log", small_fs / "stdout.log"
    port = free_port()
    cmd = [sys.executable, "-m", "ferrule", "logging_app:app", "-b", f"127.0.0.1:{port}", "--chdir", str(APPS),
           "--error-logfile", str(errors), "--access-logfile", str(access)]
    with open(stdout, "ab") as out, open(tmp_path / "stderr.log", "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    with reaped(proc):
        wait_for_port(port, proc)
        all_ok(port, 3, "/log")
        all_ok(port, 1, "/print")
        wait_until(lambda: access.read_text().count("GET /") == 4)
        time.sleep(0.3)  # the master has nothing left to say
        fill(small_fs, [errors, access, stdout])
        started = time.monotonic()
        # Each /log: an info and a warning line in the error log; each /print: a line
        # printed to stdout; each request: a line in the access log.
        all_ok(port, 20, "/log")
        all_ok(port, 5, "/print")
        assert time.monotonic() - started < 10
        time.sleep(0.5)  # the last access line is written after its response was sent
        assert "GET /log?n=19" not in access.read_text()
        assert lost(errors.read_text(), "error log") == []

        (small_fs / "filler").unlink()
        assert get(port, "/print?msg=back")[0] == 200
        wait_until(lambda: lost(errors.read_text(), "access log"))
        text = errors.read_text()
        full = "No space left on device (os error 28)"
        assert lost(text, "error log") == [(40, full)]
        assert lost(text, "access log") == [(25, full)], access.read_text()
        assert lost(text, "stdout") == [(5, full)]
        # The error log's notice comes before the first line that got through.
        assert text.index("error log lines lost") < text.index("stdout lines lost")
        assert "GET /print?msg=back" in access.read_text()
        # The access log only ever holds access lines.
        assert "lost" not in access.read_text()
        assert stdout.read_text().count("printed by") == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0



#: gunicorn's default access line, whole, for a request to /?r=<id>.
ACCESS_LINE = re.compile(r'127\.0\.0\.1 - - \[[^\]]+\] "GET /\?r=(\w+) HTTP/1\.1" 200 \d+ "-" "[^"]*"')


def access_ids(text, cut_at_end=False):
    """The request ids of the whole access lines; every line must be one (but the
    last, with `cut_at_end`: the start of a line the full disk cut short, when the
    process stopped before the disk took its end)."""
    ids = []
    lines = text.splitlines()
    if cut_at_end and not text.endswith("\n"):
        assert not ACCESS_LINE.fullmatch(lines.pop())
    for line in lines:
        m = ACCESS_LINE.fullmatch(line)
        assert m, f"not a whole access line: {line!r}"
        ids.append(m.group(1))
    return ids


def start_on_small_fs(small_fs, tmp_path):
    """proc:app with its access log on the small tmpfs and its error log elsewhere."""
    errors, access = tmp_path / "error.log", small_fs / "access.log"
    port = free_port()
    cmd = [sys.executable, "-m", "ferrule", "proc:app", "-b", f"127.0.0.1:{port}", "--chdir", str(APPS),
           "-w", "1", "--error-logfile", str(errors), "--access-logfile", str(access)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    for i in range(5):
        assert get(port, f"/?r=warm{i}")[0] == 200
    wait_until(lambda: access.read_text().count("GET /?r=warm") == 5)
    return proc, port, errors, access


def fill_all_free_pages(fs):
    """Takes every free page, leaving the access log's last page as it is: the next
    line that needs a new page is torn, as on a real disk that fills up."""
    fd = os.open(fs / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError as exc:
        assert exc.errno == 28
    finally:
        os.close(fd)


def test_access_lines_lost_to_a_full_disk_are_counted_exactly_and_no_line_is_torn(small_fs, tmp_path):
    proc, port, errors, access = start_on_small_fs(small_fs, tmp_path)
    with reaped(proc):
        fill_all_free_pages(small_fs)
        n = 300  # about 100 bytes each: the last page's room takes a few dozen
        started = time.monotonic()
        for i in range(n):
            assert get(port, f"/?r={i}")[0] == 200
        assert time.monotonic() - started < 30
        time.sleep(0.3)
        assert lost(errors.read_text(), "access log") == []  # nothing said while nothing works
        (small_fs / "filler").unlink()
        assert get(port, "/?r=back")[0] == 200
        wait_until(lambda: lost(errors.read_text(), "access log"))
        (count, reason), = lost(errors.read_text(), "access log")
        assert reason == "No space left on device (os error 28)"
        ids = access_ids(access.read_text())
        written = [int(i) for i in ids if i.isdigit()]
        assert written == list(range(len(written))), ids  # the first ones, in order
        assert 0 < len(written) < n
        assert len(written) + count == n, (len(written), count)
        assert ids[-1] == "back"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_access_lines_lost_are_reported_when_the_worker_stops(small_fs, tmp_path):
    """No request after the loss: the count is written as the worker stops, not lost with it."""
    proc, port, errors, access = start_on_small_fs(small_fs, tmp_path)
    with reaped(proc):
        fill_all_free_pages(small_fs)
        for i in range(100):
            assert get(port, f"/?r={i}")[0] == 200
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        (count, reason), = lost(errors.read_text(), "access log")
        assert reason == "No space left on device (os error 28)"
        # The line cut short by the full disk is one of those counted.
        written = [i for i in access_ids(access.read_text(), cut_at_end=True) if i.isdigit()]
        assert len(written) + count == 100, (written, count)


def test_an_unwritable_log_file_never_takes_a_request_or_a_process_down(serve):
    s = serve("proc:app", "-w", "2", "--error-logfile", "/dev/full", "--access-logfile", "/dev/full")
    old = booted(s, 2)
    all_ok(s.port, 20)
    s.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: (new := children(s.proc.pid)) and len(new) == 2 and not set(new) & set(old)
               and all(serving(k) for k in new))
    all_ok(s.port, 20)
    assert s.stop() == 0


# Python logging ---------------------------------------------------------------------------

def test_the_flask_recipe_sends_the_apps_log_lines_to_the_error_log(serve):
    s = serve("logging_app:app", "-w", "2")
    booted(s, 2)
    pids = set()
    for i in range(6):
        assert get(s.port, f"/log?msg=m{i}")[0] == 200
    assert get(s.port, "/fail")[0] == 200
    s.stop()
    log = s.log()
    for i in range(6):
        m = re.search(rf"\[(\d+)\] \[INFO\] info m{i} from (\d+)\n", log)
        assert m and m.group(1) == m.group(2), log
        pids.add(m.group(1))
        assert re.search(rf"\[{m.group(1)}\] \[WARNING\] warning m{i} from ", log)
    assert pids <= {str(p) for p in re.findall(r"Booting worker with pid: (\d+)", log)}
    # --log-level info: the app's debug lines are filtered as the server's are.
    assert "debug m0" not in log
    assert re.search(r"\[ERROR\] division failed in \d+\nTraceback .*ZeroDivisionError", log, re.S)


LEVEL_HOOKS = """
import logging, os

def when_ready(server):
    logging.getLogger("gunicorn.error").warning("master %s via gunicorn.error", os.getpid())
    logging.getLogger("ferrule.error").error("master %s via ferrule.error", os.getpid())
    server.log.log(logging.WARNING, "server.log.log %s", os.getpid())
    server.log.info("server.log.info %s", os.getpid())
    logging.getLogger("gunicorn.error").critical("master %s critical", os.getpid())

def on_reload(server):
    logging.getLogger("gunicorn.error").debug("reloaded, master %s", os.getpid())

def post_worker_init(worker):
    worker.log.log(logging.ERROR, "worker.log.log %s", os.getpid())
    try:
        {}["x"]
    except KeyError:
        worker.log.exception("worker.log.exception %s", os.getpid())
    try:
        raise ValueError("kept")
    except ValueError as exc:
        kept = exc
    worker.log.error("worker.log.error exc_info %s", os.getpid(), exc_info=kept)
"""


def test_log_level_applies_to_python_loggers_and_follows_a_reload(serve, tmp_path):
    conf = tmp_path / "ferrule.conf.py"
    conf.write_text(LEVEL_HOOKS + 'loglevel = "warning"\n')
    s = serve("logging_app:app", "-c", str(conf))
    old = booted(s, 1)
    assert get(s.port, "/log?msg=before")[0] == 200
    master = s.proc.pid
    wait_until(lambda: "worker.log.error exc_info" in s.log())  # post_worker_init's last line
    log = s.log()
    assert f"[{master}] [WARNING] master {master} via gunicorn.error" in log
    assert f"[{master}] [ERROR] master {master} via ferrule.error" in log
    assert f"[{master}] [WARNING] server.log.log {master}" in log
    assert f"[{master}] [CRITICAL] master {master} critical" in log  # gunicorn's level name (was ERROR)
    assert "server.log.info" not in log  # below --log-level warning
    assert f"[{old[0]}] [ERROR] worker.log.log {old[0]}" in log
    assert re.search(rf"\[{old[0]}\] \[ERROR\] worker.log.exception {old[0]}\nTraceback .*KeyError", log, re.S)
    # exc_info=<an exception> outside its except block: its own traceback (was "NoneType: None").
    assert re.search(rf"\] worker.log.error exc_info {old[0]}\nTraceback [^[]*ValueError: kept\n", log), log
    assert "warning before from" in log and "info before from" not in log

    conf.write_text(LEVEL_HOOKS + 'loglevel = "debug"\n')
    s.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: (new := children(s.proc.pid)) and len(new) == 1 and new != old and serving(new[0]))
    assert get(s.port, "/log?msg=after")[0] == 200
    s.stop()
    log = s.log()
    assert f"[{master}] [DEBUG] reloaded, master {master}" in log
    assert "debug after from" in log and "info after from" in log


def test_log_level_critical_lets_only_critical_lines_through(serve, tmp_path):
    conf = tmp_path / "ferrule.conf.py"
    conf.write_text(LEVEL_HOOKS + 'loglevel = "critical"\n')
    s = serve("logging_app:app", "-c", str(conf))
    booted(s, 1)
    assert get(s.port, "/log?msg=crit")[0] == 200
    master = s.proc.pid
    wait_until(lambda: f"[CRITICAL] master {master} critical" in s.log())
    s.stop()
    log = s.log()
    # Errors (the hooks' and the worker's) are below critical; only the critical line stays.
    assert "[ERROR]" not in log and "[WARNING]" not in log and "[INFO]" not in log, log
    assert f"[{master}] [CRITICAL] master {master} critical" in log


def test_gunicorn_access_writes_to_the_access_log_at_info(serve, tmp_path):
    access = tmp_path / "access.log"
    s = serve("logging_app:app", "--access-logfile", str(access), "--log-level", "error")
    booted(s, 1)
    status, body = get(s.port, "/loggers")
    assert status == 200
    levels = json.loads(body)
    assert levels["gunicorn.error"] == levels["ferrule.error"] == ["ERROR", ["ErrorLogHandler"], False]
    assert levels["gunicorn.access"] == levels["ferrule.access"] == ["INFO", ["AccessLogHandler"], False]
    assert get(s.port, "/access")[0] == 200
    wait_until(lambda: "GET /access " in access.read_text())
    text = access.read_text()
    m = re.search(r"^custom access line from (\d+)$", text, re.M)
    assert m and int(m.group(1)) in children(s.proc.pid)
    assert "custom access line" not in s.log()


def test_a_log_line_that_is_not_utf8_is_written_not_raised_into_the_app(serve, tmp_path):
    # Before: UnicodeEncodeError ("surrogates not allowed") from each of the three, a 500.
    access = tmp_path / "access.log"
    s = serve("logging_app:app", "--access-logfile", str(access))
    booted(s, 1)
    assert get(s.port, "/undecodable") == (200, "logged")
    wait_until(lambda: "wsgi.errors report-" in s.log() and "GET /undecodable " in access.read_text())
    assert re.search(r"\[WARNING\] cannot read report-\ufffd+\.csv\n", s.log()), s.log()
    assert re.search(r"\[ERROR\] wsgi.errors report-\ufffd+\.csv\n", s.log()), s.log()
    assert re.search(r"^access report-\ufffd+\.csv$", access.read_text(), re.M), access.read_text()


RUN_SCRIPT = """
import sys
sys.path.insert(0, {apps!r})
import ferrule
from logging_app import app
ferrule.run(app, bind="127.0.0.1:{port}", error_logfile={errors!r}, log_level="info")
"""


def test_ferrule_run_reaches_python_logging(tmp_path):
    port, errors = free_port(), tmp_path / "error.log"
    script = RUN_SCRIPT.format(apps=str(APPS), port=port, errors=str(errors))
    proc = subprocess.Popen([sys.executable, "-c", script])
    with reaped(proc):
        wait_for_port(port, proc)
        assert get(port, "/log?msg=run")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    log = errors.read_text()
    # The app copied the logger's level (INFO, ferrule's default) when it was imported.
    assert f"[{proc.pid}] [INFO] info run from {proc.pid}" in log
    assert f"[{proc.pid}] [WARNING] warning run from {proc.pid}" in log
    assert "debug run" not in log


SIGPIPE_SCRIPT = """
import signal, sys
sys.path.insert(0, {apps!r})
signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as some command-line programs do
import ferrule
from logging_app import app
ferrule.run(app, bind="127.0.0.1:{port}")
"""


def test_ferrule_run_with_sigpipe_restored_survives_a_closed_stderr():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SIGPIPE_SCRIPT.format(apps=str(APPS), port=port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    proc.stderr.close()
    with reaped(proc):
        wait_for_port(port, proc)
        for path in ("/", "/log", "/print"):
            all_ok(port, 5, path)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


# A flood of malformed requests ------------------------------------------------------------

def invalid_flood(port, n, threads=4, limit=90.0):
    """Sends n malformed requests on n connections (bounded in count and time); returns
    the seconds it took."""
    import concurrent.futures

    deadline = time.monotonic() + limit
    started = time.monotonic()

    def one(_):
        if time.monotonic() > deadline:
            return None
        return raw(port, b"\x01\x02 / HTTP/1.1\r\nHost: x\r\n\r\n")[:12]

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        replies = list(pool.map(one, range(n)))
    assert replies == [b"HTTP/1.1 400"] * n, {r for r in replies}
    return time.monotonic() - started


def summarized(log, what="invalid requests"):
    return [int(n) for n in re.findall(rf"\[WARNING\] {what}: (\d+) more in the last \d+ s, not logged one by one", log)]


def test_a_flood_of_invalid_requests_logs_a_few_lines_and_a_count(serve):
    s = serve("proc:app", "-w", "1")
    booted(s, 1)
    before = len(s.log().splitlines())
    n = 5000
    took = invalid_flood(s.port, n)
    # The count of a flood that ended comes within about two seconds.
    wait_until(lambda: sum(summarized(s.log())) + s.log().count("invalid request from") == n, timeout=10)
    time.sleep(1.5)
    log = s.log()
    logged, hidden = log.count("invalid request from"), summarized(log)
    assert logged + sum(hidden) == n, (logged, hidden)
    # At most 10 a second, plus a count when the flood ends and every 10 s while it lasts.
    assert logged <= 10 * (took + 2), (logged, took)
    assert 1 <= len(hidden) <= took / 10 + 2, hidden
    assert len(log.splitlines()) - before <= logged + len(hidden), log[-2000:]
    # The worker still serves.
    assert get(s.port)[0] == 200
    assert s.stop() == 0


def test_at_log_level_debug_every_invalid_request_is_logged(serve):
    s = serve("proc:app", "-w", "1", "--log-level", "debug")
    booted(s, 1)
    invalid_flood(s.port, 300)
    wait_until(lambda: s.log().count("invalid request from") == 300, timeout=10)
    assert s.stop() == 0
    assert summarized(s.log()) == []


def test_slow_heads_closed_by_the_header_timeout_log_a_few_lines_and_a_count(serve):
    import socket

    s = serve("proc:app", "-w", "1", "--header-timeout", "0.5")
    booted(s, 1)
    n = 60
    socks = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(n)]
    try:
        for c in socks:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        replies = [c.recv(64)[:12] for c in socks]
    finally:
        for c in socks:
            c.close()
    assert replies == [b"HTTP/1.1 408"] * n
    what = "connections closed for an incomplete request head"
    line = "closing a connection from 127.0.0.1 that did not send a complete request head within --header-timeout"
    wait_until(lambda: s.log().count(line) + sum(summarized(s.log(), what)) == n, timeout=10)
    assert s.log().count(line) <= 20, s.log()
    assert s.stop() == 0
