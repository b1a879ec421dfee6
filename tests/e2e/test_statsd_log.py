"""statsd's log.* counters (gunicorn's log.critical, log.error, log.warning, log.exception):
one per error-log line of that level, from the master and the workers, from Python (the
hooks' server.log) and from Rust (an app's traceback counts as log.exception), received by a
UDP listener."""

from __future__ import annotations

import http.client
import time

from conftest import booted

from .test_statsd import listener

HOOKS = """
def _each_level(log, where):
    log.warning("a warning from %s", where)
    log.error("an error from %s", where)
    log.critical("a critical line from %s", where)
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("an exception in %s", where)


def when_ready(server):
    _each_level(server.log, "the master")


def post_fork(server, worker):
    _each_level(server.log, "a worker")
"""


def count_log_lines(rx, prefix: str, counts: dict, done, seconds: float = 15) -> None:
    """Adds each `{prefix}gunicorn.log.LEVEL:1|c|@1.0` datagram the listener receives to
    ``counts[LEVEL]`` until ``done()`` or the time is up (bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        try:
            data = rx.recv(65536).decode()
        except TimeoutError:
            continue
        for line in data.split("\n"):
            for level in counts:
                if line == f"{prefix}gunicorn.log.{level}:1|c|@1.0":
                    counts[level] += 1


def test_each_error_log_line_is_counted_by_level(serve, tmp_path):
    rx = listener()
    conf = tmp_path / "hooks.conf.py"
    conf.write_text(HOOKS)
    s = serve("uwsgi_app:app", "-c", str(conf), "--statsd-host", f"127.0.0.1:{rx.getsockname()[1]}",
              "--statsd-prefix", "shop")
    booted(s, 1)
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    c.request("GET", "/error")
    assert c.getresponse().status == 500
    c.close()

    counts = {"critical": 0, "error": 0, "warning": 0, "exception": 0}

    def lines_of(level):
        return s.log().count(f"[{level}]")

    def matched():
        log = s.log()
        return ("Error handling request /error" in log
                and counts["critical"] == lines_of("CRITICAL")
                and counts["warning"] == lines_of("WARNING")
                and counts["error"] + counts["exception"] == lines_of("ERROR")
                and counts["exception"] == 3)

    count_log_lines(rx, "shop.", counts, matched)
    # The master's hook and the worker's: two of each level; the app's traceback a third
    # exception, counted as gunicorn does (log.exception, not log.error).
    assert matched(), (counts, s.log())
    assert counts["critical"] >= 2 and counts["warning"] >= 2 and counts["error"] >= 2


def test_lines_python_logging_handles_are_counted_too(serve, tmp_path):
    # Under a Python logging configuration the hooks' server.log lines go straight to
    # Python's gunicorn.error, and the Rust lines through the records queue: both still
    # count, and Log.exception is an ERROR record there as in gunicorn.
    import json
    rx = listener()
    conf = tmp_path / "hooks.conf.py"
    conf.write_text(HOOKS)
    err = tmp_path / "err.jsonl"
    config = {"version": 1, "root": {"handlers": []},
              "handlers": {"err": {"()": "recording_handler.Recording", "path": str(err)}},
              "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["err"], "propagate": False}}}
    s = serve("uwsgi_app:app", "-c", str(conf), "--statsd-host", f"127.0.0.1:{rx.getsockname()[1]}",
              "--log-config-dict", json.dumps(config))
    booted_ok = time.monotonic() + 15
    while time.monotonic() < booted_ok and not (err.exists() and "an exception in a worker" in err.read_text()):
        time.sleep(0.05)
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    c.request("GET", "/error")
    assert c.getresponse().status == 500
    c.close()
    counts = {"critical": 0, "error": 0, "warning": 0, "exception": 0}
    count_log_lines(rx, "", counts, lambda: (counts["exception"] >= 3 and counts["critical"] >= 2
                                             and counts["warning"] >= 2 and counts["error"] >= 2))
    assert counts["exception"] >= 3 and counts["critical"] >= 2, counts
    assert counts["warning"] >= 2 and counts["error"] >= 2, counts
    records = [json.loads(line) for line in err.read_text().splitlines()]
    exc = [r for r in records if r["message"].startswith("an exception in")]
    assert exc and all(r["levelname"] == "ERROR" for r in exc), exc
