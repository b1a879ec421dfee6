"""`--access-logformat json`: one JSON object per request, every line parsed with
json.loads, values escaped whatever a client sends, numbers as numbers, null for what
the text line shows as `-`; over keep-alive, over uwsgi, from a config file, with
fields and environ keys added (docs/logging.md, "JSON access log")."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import APPS, booted, parse, raw, wait_until
from .test_uwsgi import ask, nginx_vars

KEYS = ["time", "remote_addr", "user", "request", "method", "path", "query", "protocol", "status", "bytes",
        "referer", "user_agent", "duration_us", "pid", "queue_us", "ttfb_us", "request_id", "egress", "egress_ms"]


def records(path: Path, n: int) -> list[dict]:
    """The first n lines of the access log, each parsed on its own, once n are there."""
    def ready():
        lines = path.read_bytes().split(b"\n") if path.exists() else []
        return len(lines) > n and lines
    lines = wait_until(ready)
    assert lines[-1] == b"", "every line ends with a line end"
    out = [json.loads(line) for line in lines[:-1]]
    assert len(out) == n, out
    return out


def test_every_line_is_one_json_object_with_every_key(serve, tmp_path):
    access = tmp_path / "access.json"
    s = serve("metrics_app:app", "--access-logfile", str(access), "--access-logformat", "json")
    booted(s, 1)  # GET /
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    try:  # keep-alive: three requests on one connection
        for path in ("/hello?a=1&b=%22x%22", "/status?404", "/hello"):
            c.request("GET", path, headers={"Referer": "http://ref.example/", "User-Agent": "probe/1"})
            c.getresponse().read()
    finally:
        c.close()
    got = records(access, 4)
    for r in got:
        assert list(r) == KEYS, r
        assert isinstance(r["status"], int) and isinstance(r["bytes"], int) and isinstance(r["pid"], int)
        assert isinstance(r["duration_us"], int) and r["time"].endswith("+00:00")
        assert r["remote_addr"] == "127.0.0.1" and r["user"] is None and r["egress"] is None
    first, second, third = got[1:]
    assert first["request"] == "GET /hello?a=1&b=%22x%22 HTTP/1.1"
    assert (first["method"], first["path"], first["query"], first["protocol"]) == (
        "GET", "/hello", "a=1&b=%22x%22", "HTTP/1.1")
    assert (first["referer"], first["user_agent"], first["status"]) == ("http://ref.example/", "probe/1", 200)
    assert second["status"] == 404 and third["status"] == 200
    # Each request has its own id (the same on one connection would be a stale one).
    assert len({r["request_id"] for r in got}) == 4
    assert s.stop() == 0


def test_a_hostile_user_agent_cannot_break_the_line(serve, tmp_path):
    access = tmp_path / "access.json"
    s = serve("routes:app", "--access-logfile", str(access), "--access-logformat", "json")
    hostile = b'x" , "status": 999, "a\\\\b \xff\xfe\xc3( \t}{'
    reply = raw(s.port, b"GET /hello HTTP/1.1\r\nHost: x\r\nUser-Agent: " + hostile + b"\r\n\r\n")
    assert parse(reply)[0] == 200
    # A NUL or a bare line end in a field is refused before the app (400): logged too.
    for bad in (b"a\x00b", b"a\nInjected: 1", b"a\rb"):
        reply = raw(s.port, b"GET /hello HTTP/1.1\r\nHost: x\r\nUser-Agent: " + bad + b"\r\n\r\n")
        assert parse(reply)[0] == 400, bad
    got = records(access, 4)
    assert got[0]["user_agent"] == 'x" , "status": 999, "a\\\\b \ufffd\ufffd\ufffd( \t}{'
    assert got[0]["status"] == 200
    for r in got[1:]:
        assert (r["status"], r["request"], r["user_agent"]) == (400, "GET /hello HTTP/1.1", None), r
    # The escapes are JSON's, in the file as they should be.
    text = access.read_text()
    assert '"user_agent":"x\\" , \\"status\\": 999, \\"a\\\\\\\\b \ufffd\ufffd\ufffd( \\t}{"' in text, text
    assert s.stop() == 0


def test_added_fields_and_environ_keys(serve, tmp_path):
    access = tmp_path / "access.json"
    fmt = "json:{X-Request-ID}i,{REMOTE_USER}e,quote={my.quote}e,{Content-Type}o,{absent}e"
    s = serve("environ_log_app:app", "--access-logfile", str(access), "--access-logformat", fmt)
    booted(s, 1)
    reply = raw(s.port, b"GET /set HTTP/1.1\r\nHost: x\r\nX-Request-ID: r-1\r\nConnection: close\r\n\r\n")
    assert parse(reply)[0] == 200
    r = records(access, 2)[1]
    assert r["req.x-request-id"] == "r-1" and r["env.REMOTE_USER"] == "alice"
    assert r["quote"] == 'say "hi"', "the value itself: the text line's \\\" is not JSON's"
    assert r["resp.content-type"] == "text/plain" and r["env.absent"] is None
    assert list(r)[:len(KEYS)] == KEYS
    assert s.stop() == 0


def test_uwsgi_requests_and_refusals_are_json_lines_too(serve, tmp_path):
    access = tmp_path / "access.json"
    s = serve("uwsgi_app:app", "--protocol", "uwsgi", "--access-logfile", str(access),
              "--access-log-format", "json", "--limit-request-body", "4")
    hostile = 'ua "quoted" \\ \xff'
    ask(s.port, [(k, hostile if k == "HTTP_USER_AGENT" else v)
                 for k, v in nginx_vars(uri="/env?q=1", protocol="HTTP/2.0")])
    assert parse(ask(s.port, nginx_vars("POST", uri="/up", body_len=5), b"hello"))[0] == 413
    ok, refused = records(access, 2)
    assert (ok["remote_addr"], ok["request"], ok["protocol"], ok["status"]) == (
        "203.0.113.9", "GET /env?q=1 HTTP/2.0", "HTTP/2.0", 200)
    assert ok["user_agent"] == 'ua "quoted" \\ \ufffd'
    assert (refused["status"], refused["request"], refused["remote_addr"]) == (
        413, "POST /up HTTP/1.1", "203.0.113.9")


def test_a_config_file_and_both_flag_spellings_choose_it(serve, tmp_path):
    conf = tmp_path / "g.conf.py"
    access = tmp_path / "from-conf.json"
    conf.write_text(f"access_log_format = 'json'\naccesslog = {str(access)!r}\n")
    s = serve("metrics_app:app", "-c", str(conf))
    booted(s, 1)
    assert records(access, 1)[0]["status"] == 200
    for flag in ("--access-logformat", "--access-log-format"):
        r = subprocess.run([sys.executable, "-m", "ferrule", "routes:app", "--access-logfile", "-", flag, "json",
                            "--print-config"], capture_output=True, text=True, timeout=60, cwd=APPS)
        assert r.returncode == 0 and "'json'" in r.stdout, r.stderr


@pytest.mark.parametrize("fmt, words", [
    ("json:{x}q", "is not {NAME}i, {NAME}o or {KEY}e"),
    ("json:status={X-Status}i", 'the key "status" is in "json:status={X-Status}i" twice'),
])
def test_a_bad_json_format_is_one_line_and_exit_2(fmt, words):
    r = subprocess.run([sys.executable, "-m", "ferrule", "routes:app", "--access-logfile", "-",
                        "--access-logformat", fmt, "--check-config"],
                       capture_output=True, text=True, timeout=60, cwd=APPS)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert words in r.stderr, r.stderr


def test_the_text_line_escapes_quotes_in_every_value_as_gunicorn(serve, tmp_path):
    # gunicorn's SafeAtoms: a client's `"` is `\"`, so it cannot close a quoted field and
    # forge the ones after it; the JSON line has the value itself.
    text, js = tmp_path / "access.log", tmp_path / "access.json"
    s = serve("routes:app", "--access-logfile", str(text))
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    c.request("GET", "/hello", headers={"User-Agent": 'ua" 500 "x', "Referer": 'r"f'})
    assert c.getresponse().read()
    c.close()
    line = wait_until(lambda: text.exists() and [ln for ln in text.read_text().splitlines() if "/hello" in ln])[0]
    assert line.endswith('"r\\"f" "ua\\" 500 \\"x"'), line
    assert s.stop() == 0
    s = serve("routes:app", "--access-logfile", str(js), "--access-logformat", "json")
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    c.request("GET", "/hello", headers={"User-Agent": 'ua" 500 "x'})
    assert c.getresponse().read()
    c.close()
    got = wait_until(lambda: js.exists() and [json.loads(ln) for ln in js.read_text().splitlines()
                                              if "/hello" in ln])
    assert got[0]["user_agent"] == 'ua" 500 "x'
    assert s.stop() == 0
