"""gunicorn's Python logging configuration (--log-config, logconfig_dict,
--log-config-dict, --log-config-json): ferrule's error and access records reach the
configured handlers with gunicorn's logger names and record attributes."""

import base64
import os
import signal
import socket
import json
import subprocess
import sys
import urllib.request

import pytest

from conftest import APPS, free_port, raw, read_response, reaped, wait_for_port, wait_until


def records(path, name=None):
    if not path.exists():
        return []
    out = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in out if name is None or r["name"] == name]


def recording(path):
    return {"()": "recording_handler.Recording", "path": str(path)}


def dict_config(error_path, access_path, json_path=None):
    handlers = {"err": recording(error_path), "acc": recording(access_path)}
    access_handlers = ["acc"]
    if json_path is not None:
        handlers["json"] = {"class": "logging.FileHandler", "filename": str(json_path), "formatter": "json"}
        access_handlers.append("json")
    return {
        "version": 1,
        # A dict's own "handlers" replace gunicorn's whole, so the default root (its
        # "console" handler) must be given too, as under gunicorn.
        "root": {"level": "WARNING", "handlers": []},
        "formatters": {"json": {"()": "pythonjsonlogger.json.JsonFormatter",
                                "fmt": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
        "handlers": handlers,
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["err"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": access_handlers, "propagate": False},
        },
    }


def request(port, path, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


HEADERS = {"User-Agent": "probe/1.0", "Referer": "http://ref.example/", "X-Custom": "Seven",
           "Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}

GUNICORN_KEYS = set("h l u t r m U q H s B b f a T M D L p".split())


def test_logconfig_dict_sends_access_records_with_gunicorns_atoms_and_rust_error_records(serve, tmp_path):
    pytest.importorskip("pythonjsonlogger")
    err, acc, js = tmp_path / "err.jsonl", tmp_path / "acc.jsonl", tmp_path / "access.json"
    conf = tmp_path / "g.conf.py"
    conf.write_text(f"logconfig_dict = {dict_config(err, acc, js)!r}\n")
    s = serve("logconfig_app:app", "-c", str(conf), "--workers", "1")
    assert request(s.port, "/hello?a=1", HEADERS) == (200, b"ok\n")
    assert request(s.port, "/log?from-app", HEADERS)[0] == 200
    reply = raw(s.port, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")
    wait_until(lambda: len(records(acc)) >= 2)
    record = records(acc, "gunicorn.access")[0]
    assert record["args_type"] == "SafeAtoms" and record["levelname"] == "INFO"
    args = record["args"]
    assert GUNICORN_KEYS <= set(args), GUNICORN_KEYS - set(args)
    assert args["h"] == "127.0.0.1" and args["l"] == "-" and args["u"] == "alice"
    assert args["r"] == "GET /hello?a=1 HTTP/1.1"
    assert (args["m"], args["U"], args["q"], args["H"]) == ("GET", "/hello", "a=1", "HTTP/1.1")
    # gunicorn's types: the status as text, the sizes and times as numbers.
    assert args["s"] == "200" and args["B"] == 3 and args["b"] == "3"
    assert isinstance(args["T"], int) and isinstance(args["M"], int) and isinstance(args["D"], int)
    assert args["f"] == "http://ref.example/" and args["a"] == "probe/1.0"
    assert args["t"].startswith("[") and args["L"].count(".") == 1 and args["p"].startswith("<")
    # Every request header lower-cased, every response header, every environ key (the
    # app's own included, its quotes escaped as gunicorn's SafeAtoms does).
    assert args["{x-custom}i"] == "Seven" and args["{user-agent}i"] == "probe/1.0"
    assert args["{x-app}o"] == "yes" and args["{content-type}o"] == "text/plain"
    assert args["{path_info}e"] == "/hello" and args["{request_method}e"] == "GET"
    assert args["{app.note}e"] == 'said \\"hi\\"'
    assert "request_id" in args  # ferrule's own atoms too
    # The message is gunicorn's default access line.
    assert record["msg"] == '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
    assert '"GET /hello?a=1 HTTP/1.1" 200 3 "http://ref.example/" "probe/1.0"' in record["message"]
    # The JSON formatter's file: one object per record.
    wait_until(lambda: js.exists() and len(js.read_text().splitlines()) >= 2)
    lines = [json.loads(line) for line in js.read_text().splitlines()]
    for line in lines:  # every line one object with the formatter's fields
        assert set(line) >= {"asctime", "name", "levelname", "message"}, line
        assert line["name"] == "gunicorn.access" and line["levelname"] == "INFO"
    assert '"GET /hello?a=1 HTTP/1.1" 200 3' in lines[0]["message"]
    assert '"GET /log?from-app HTTP/1.1" 200 3' in lines[1]["message"]
    # Error records: the worker's boot line and the 400's line come from Rust, the
    # app's warning from its own logging call.
    wait_until(lambda: any("invalid request" in r["message"] for r in records(err)))
    errors = records(err, "gunicorn.error")
    assert any(r["message"].startswith("Booting worker with pid") and r["levelname"] == "INFO" for r in errors)
    assert any(r["message"] == "app warning from-app" and r["levelname"] == "WARNING" for r in errors)
    bad = [r for r in errors if "invalid request from 127.0.0.1" in r["message"]]
    assert bad and bad[0]["levelname"] == "WARNING"
    # Nothing went to ferrule's own error log lines.
    assert "Booting worker" not in s.log()
    s.stop()
    assert any("Shutting down" in r["message"] for r in records(err))


def test_log_config_dict_flag_and_the_ferrule_error_alias(serve, tmp_path):
    err = tmp_path / "err.jsonl"
    config = {"version": 1, "root": {"handlers": []}, "handlers": {"err": recording(err)},
              "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["err"], "propagate": False}}}
    s = serve("logconfig_app:app", "--log-config-dict", json.dumps(config))
    assert request(s.port, "/alias?via-ferrule")[0] == 200
    wait_until(lambda: any(r["message"] == "alias error via-ferrule" for r in records(err)))
    alias = [r for r in records(err) if r["message"] == "alias error via-ferrule"][0]
    # Handled by gunicorn.error's handlers, under the name it was logged with.
    assert alias["name"] == "ferrule.error" and alias["levelname"] == "ERROR"
    wait_until(lambda: any(r["message"].startswith("Booting worker") for r in records(err, "gunicorn.error")))


def test_log_config_json_naming_the_ferrule_loggers_gets_ferrules_records(serve, tmp_path):
    err, acc = tmp_path / "err.jsonl", tmp_path / "acc.jsonl"
    path = tmp_path / "logging.json"
    path.write_text(json.dumps({
        "version": 1, "root": {"handlers": []}, "handlers": {"err": recording(err), "acc": recording(acc)},
        "loggers": {"ferrule.error": {"level": "INFO", "handlers": ["err"], "propagate": False},
                    "ferrule.access": {"level": "INFO", "handlers": ["acc"], "propagate": False}}}))
    s = serve("logconfig_app:app", "--log-config-json", str(path), "--access-logformat", "%(m)s %(U)s %(s)s")
    assert request(s.port, "/json-config")[0] == 200
    wait_until(lambda: records(acc))
    record = records(acc)[0]
    assert record["name"] == "ferrule.access" and record["message"] == "GET /json-config 200"
    wait_until(lambda: any(r["message"].startswith("Booting worker") for r in records(err, "ferrule.error")))


def test_file_config_as_gunicorn_reads_it(serve, tmp_path):
    path = tmp_path / "logging.ini"
    # %(here)s: gunicorn's default, the directory of the file.
    path.write_text("""
[loggers]
keys=root,error,access

[handlers]
keys=err,acc

[formatters]
keys=plain

[logger_root]
level=WARNING
handlers=

[logger_error]
level=INFO
handlers=err
propagate=0
qualname=gunicorn.error

[logger_access]
level=INFO
handlers=acc
propagate=0
qualname=gunicorn.access

[handler_err]
class=recording_handler.Recording
args=('%(here)s/err.jsonl',)

[handler_acc]
class=recording_handler.Recording
args=('%(here)s/acc.jsonl',)

[formatter_plain]
format=%(message)s
""")
    s = serve("logconfig_app:app", "--log-config", str(path), "--access-logformat", "%(m)s %({x-custom}i)s")
    assert request(s.port, "/ini", {"X-Custom": "abc"})[0] == 200
    wait_until(lambda: records(tmp_path / "acc.jsonl"))
    assert records(tmp_path / "acc.jsonl")[0]["message"] == "GET abc"
    wait_until(lambda: any(r["message"].startswith("Booting worker") for r in records(tmp_path / "err.jsonl")))


def test_access_logfile_with_a_config_that_leaves_gunicorn_access_alone(serve, tmp_path):
    # gunicorn puts its own handler on gunicorn.access before applying the config:
    # a config about other loggers keeps the access log file as it was.
    err, access = tmp_path / "err.jsonl", tmp_path / "access.log"
    config = {"version": 1, "root": {"handlers": []}, "handlers": {"err": recording(err)},
              "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["err"], "propagate": False}}}
    s = serve("logconfig_app:app", "--log-config-dict", json.dumps(config), "--access-logfile", str(access))
    assert request(s.port, "/kept", {"User-Agent": "agent/2"})[0] == 200
    wait_until(lambda: access.exists() and "/kept" in access.read_text())
    line = access.read_text().splitlines()[0]
    assert '"GET /kept HTTP/1.1" 200 3 "-" "agent/2"' in line


def run_check(*args):
    return subprocess.run([sys.executable, "-m", "ferrule", "logconfig_app:app", "-b", f"127.0.0.1:{free_port()}",
                           "--check-config", *args], cwd=APPS, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, code, words", [
    (["--log-config", "/nonexistent/logging.ini"], 3, "log-config '/nonexistent/logging.ini' not found"),
    (["--log-config-json", "/nonexistent/logging.json"], 3, "log-config-json '/nonexistent/logging.json' not found"),
    (["--log-config-dict", "{not json"], 2, "--log-config-dict must be a JSON object"),
    (["--log-config-dict", '{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}'], 2,
     "logconfig_dict: Unable to configure handler 'h'"),
])
def test_a_bad_logging_config_is_one_line_and_an_exit_status(args, code, words):
    r = run_check(*args)
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], r.stderr


def test_a_log_config_json_file_that_is_not_json_is_exit_2(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("[1, 2")
    r = run_check("--log-config-json", str(path))
    assert r.returncode == 2 and "not JSON" in r.stderr, r.stderr


def test_without_a_config_logs_stay_on_the_rust_path(serve):
    s = serve("logconfig_app:app", "--access-logfile", "-")
    assert request(s.port, "/plain")[0] == 200
    wait_until(lambda: "/plain" in s.out())
    assert "Booting worker with pid" in s.log()


def test_a_stuck_handler_never_holds_up_requests_and_dropped_records_are_reported(serve, tmp_path):
    # At debug each request logs a line from Rust; the handler is stuck on the first,
    # so the worker's queue fills (4096) and the rest are dropped, never waited for.
    err, gate = tmp_path / "err.jsonl", tmp_path / "gate"
    os.mkfifo(gate)
    config = {"version": 1, "root": {"handlers": []},
              "handlers": {"err": {"()": "recording_handler.Gated", "path": str(err), "gate": str(gate)}},
              "loggers": {"gunicorn.error": {"level": "DEBUG", "handlers": ["err"], "propagate": False}}}
    s = serve("logconfig_app:app", "--log-config-dict", json.dumps(config))
    n = 6000
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        for _ in range(n):
            c.sendall(b"GET /q HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(c) == (200, b"ok\n")
    with open(gate, "wb") as g:  # let the handler go
        g.write(b"x")
    wait_until(lambda: any("dropped" in r["message"] for r in records(err)), timeout=60)
    note = [r for r in records(err) if "dropped" in r["message"]][0]
    assert note["levelname"] == "WARNING" and note["name"] == "gunicorn.error"
    dropped = int(note["message"].split()[0])
    # Nearly every line past the queue's room: the queue had 4096 places.
    assert n - 4096 - 300 <= dropped <= n, note


RUN_SCRIPT = """
import sys
sys.path.insert(0, {apps!r})
import ferrule
from logconfig_app import app
ferrule.run(app, bind="127.0.0.1:{port}", log_config_dict={config!r})
"""


def test_ferrule_run_takes_a_log_config_dict(tmp_path):
    port, err, acc = free_port(), tmp_path / "err.jsonl", tmp_path / "acc.jsonl"
    config = {"version": 1, "root": {"handlers": []},
              "handlers": {"err": recording(err), "acc": recording(acc)},
              "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["err"], "propagate": False},
                          "gunicorn.access": {"level": "INFO", "handlers": ["acc"], "propagate": False}}}
    proc = subprocess.Popen([sys.executable, "-c", RUN_SCRIPT.format(apps=str(APPS), port=port, config=config)])
    with reaped(proc):
        wait_for_port(port, proc)
        assert request(port, "/single?x=1")[0] == 200
        wait_until(lambda: records(acc))
        assert records(acc)[0]["args"]["U"] == "/single"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    messages = [r["message"] for r in records(err)]
    assert any(m.startswith("Listening at: http://127.0.0.1") for m in messages), messages
    assert any(m.startswith("Shutting down") for m in messages), messages


def test_a_config_that_leaves_gunicorn_error_alone_keeps_the_error_log_once(serve, tmp_path):
    # ferrule's own handler stays on gunicorn.error: Rust's lines go to Python and come
    # back to the error log through it, once each, never round again.
    acc = tmp_path / "acc.jsonl"
    config = {"version": 1, "root": {"handlers": []}, "handlers": {"acc": recording(acc)},
              "loggers": {"gunicorn.access": {"level": "INFO", "handlers": ["acc"], "propagate": False}}}
    s = serve("logconfig_app:app", "--log-config-dict", json.dumps(config))
    assert request(s.port, "/log?once")[0] == 200
    wait_until(lambda: "app warning once" in s.log() and "Booting worker with pid" in s.log())
    log = s.log()
    assert log.count("Booting worker with pid") == 1 and log.count("app warning once") == 1, log
    assert "] [WARNING] app warning once" in log  # the error log's own line format
    wait_until(lambda: records(acc))


def test_a_reload_applies_a_changed_logconfig_dict(serve, tmp_path):
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"

    def write(path):
        config = {"version": 1, "root": {"handlers": []}, "handlers": {"h": recording(path)},
                  "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["h"], "propagate": False},
                              "gunicorn.access": {"level": "INFO", "handlers": ["h"], "propagate": False}}}
        conf.write_text(f"logconfig_dict = {config!r}\n")

    conf = tmp_path / "g.conf.py"
    write(first)
    s = serve("logconfig_app:app", "-c", str(conf))
    wait_until(lambda: any(r["message"].startswith("Booting worker") for r in records(first)))
    write(second)
    s.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: any(r["message"].startswith("Booting worker") for r in records(second)))
    assert any(r["message"] == "Hang up: reloading" for r in records(first))
    wait_until(lambda: request(s.port, "/after-reload")[0] == 200
               and any(r["name"] == "gunicorn.access" and r["args"].get("U") == "/after-reload"
                       for r in records(second)))
    # Served by the new worker (a request may still reach the old one, which keeps the
    # old configuration until it stops).
    booted = {int(r["message"].split()[-1]) for r in records(second) if r["message"].startswith("Booting worker")}
    served = {r["process"] for r in records(second) if r["name"] == "gunicorn.access"}
    assert served and served <= booted, (served, booted)


def test_a_408_made_by_the_timeout_sweep_reaches_the_access_records(serve, tmp_path):
    # The 408 for a head that never ends is answered by the worker's monitor thread,
    # which never holds the GIL and must not wait for it: its record waits for the
    # drain thread (or the next request) instead of being lost.
    err, acc = tmp_path / "err.jsonl", tmp_path / "acc.jsonl"
    config = dict_config(err, acc)
    del config["formatters"]  # no JSON formatter here: python-json-logger is not needed
    s = serve("logconfig_app:app", "--log-config-dict", json.dumps(config), "--header-timeout", "0.5")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"GET /slow-head HTTP/1.1\r\nHost: x\r\n")
        assert c.recv(4096).startswith(b"HTTP/1.1 408")
    wait_until(lambda: any(r["args"].get("s") == "408" for r in records(acc, "gunicorn.access")))
    line = [r for r in records(acc, "gunicorn.access") if r["args"].get("s") == "408"][0]
    assert line["args"]["h"] == "127.0.0.1"


def test_a_json_access_format_with_a_python_logging_config_is_refused():
    # Its records' message would be the literal format: one line and exit 2 instead.
    r = subprocess.run([sys.executable, "-m", "ferrule", "logconfig_app:app", "-b", "127.0.0.1:0",
                        "--chdir", str(APPS), "--access-logformat", "json",
                        "--log-config-dict", json.dumps({"version": 1})],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r
    assert "JSON formatter" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
