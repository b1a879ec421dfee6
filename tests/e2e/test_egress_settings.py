"""Egress settings (docs/egress.md, "Settings"): flags repeated and comma-separated, config
file lists, a bad SPEC or an unwritable log (one line, exit 2 / 3), --preload, HUP changing
the policy, USR1 reopening the log, and ferrule.run()."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import APPS, booted, children, free_port, reaped, wait_for_port, wait_until
from .egress_support import call, check, listeners, records, start, to_port, wait_records  # noqa: F401


class Running:
    """A ferrule started by the test itself, as `booted()` and `verdict()` take it."""

    def __init__(self, port, proc):
        self.port, self.proc = port, proc


def ferrule(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "ferrule", "egress_app:app", "--chdir", str(APPS),
                           "-b", f"127.0.0.1:{free_port()}", *args], capture_output=True, text=True, timeout=timeout)


def verdict(s, log, target):
    """Reaches `target` once: (verdict, rule) of its newest record."""
    before = len([r for r in records(log) if r["port"] == target.port])
    _, got = call(s.port, f"/socket?to=127.0.0.1:{target.port}")
    recs = wait_records(log, before + 1, to_port(target.port))
    assert recs[-1]["request_id"] == got["request_id"]
    assert got["results"] == (["ok"] if recs[-1]["verdict"] == "allow" else ["PermissionError"])
    return recs[-1]["verdict"], recs[-1]["rule"]


def test_flags_repeat_and_split_on_commas(serve, tmp_path, listeners):
    a, b, c, d = listeners(), listeners(), listeners(), listeners()
    s, log = start(serve, tmp_path, "--egress-deny", f"127.0.0.1:{a.port},127.0.0.1:{b.port}",
                   "--egress-deny", f"127.0.0.1:{c.port}")
    # Each rule is named as written, one SPEC of the comma-separated value.
    for t in (a, b, c):
        assert verdict(s, log, t) == ("deny", f"127.0.0.1:{t.port}")
    assert verdict(s, log, d) == ("allow", None)
    assert sum(t.settle() for t in (a, b, c, d)) == 1


def test_config_file_lists(serve, tmp_path, listeners):
    no, yes, other = listeners(), listeners(), listeners()
    conf = tmp_path / "egress.conf.py"
    log = tmp_path / "from-config.log"
    conf.write_text(f"egress_log = {str(log)!r}\n"
                    f"egress_deny = ['127.0.0.1:{no.port}']\n"
                    f"egress_allow = ['127.0.0.1:{yes.port}', '127.0.0.1:{no.port}']\n")
    s = serve("egress_app:app", "-c", str(conf))
    assert verdict(s, log, no) == ("deny", f"127.0.0.1:{no.port}")
    assert verdict(s, log, yes) == ("allow", f"127.0.0.1:{yes.port}")
    assert verdict(s, log, other) == ("deny", None)
    assert (no.settle(), yes.settle(), other.settle()) == (0, 1, 0)


@pytest.mark.parametrize("spec", ["300.1.1.1", "10.0.0.0/33", "127.0.0.1:70000", "127.0.0.1:", "[::1",
                                  "::1:80:x:y:z:w:v:u", "*.", "exa mple.com", "metadata:80x"])
@pytest.mark.parametrize("flag", ["--egress-deny", "--egress-allow"])
def test_a_bad_spec_is_one_line_naming_it_and_exit_2(flag, spec):
    r = ferrule(f"{flag}={spec}")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferrule: error:") and flag[2:] in lines[0], r.stderr
    assert spec in lines[0], r.stderr


@pytest.mark.parametrize("value", ["", " ", "127.0.0.1,,10.0.0.1", "127.0.0.1,"])
def test_an_empty_item_is_a_bad_spec(value):
    # `--egress-allow "$ALLOWED"` with the variable unset must not turn an allow-list into
    # "allow everything" (nor drop a deny rule) without a word.
    r = ferrule("--check-config", f"--egress-allow={value}")
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "egress-allow" in r.stderr, r.stderr


def test_a_bad_spec_in_a_config_file_is_exit_2(tmp_path):
    conf = tmp_path / "bad.conf.py"
    conf.write_text("egress_deny = ['metadata', '10.0.0.0/40']\n")
    r = ferrule("-c", str(conf))
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "10.0.0.0/40" in r.stderr, r.stderr


def test_an_egress_log_that_cannot_be_opened_is_one_line_and_exit_3(tmp_path):
    path = tmp_path / "missing-dir" / "egress.log"
    r = ferrule("--egress-log", str(path))
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferrule: error:") and str(path) in lines[0], r.stderr


def test_check_config_accepts_every_kind_of_spec():
    r = ferrule("--check-config", "--egress-deny", "metadata,private,10.1.2.3,10.0.0.0/8:5432,db.internal:5432",
                "--egress-deny", "[fd00::1]:443,fd00::/8,*.example.com,*.example.org:443",
                "--egress-allow", "api.example.com:443,2001:db8::1")
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout


def test_preload_workers_record_and_deny(serve, tmp_path, listeners):
    no, yes = listeners(), listeners()
    s, log = start(serve, tmp_path, "--preload", "-w", "2", "--egress-deny", f"127.0.0.1:{no.port}")
    booted(s, 2)
    assert verdict(s, log, no) == ("deny", f"127.0.0.1:{no.port}")
    assert verdict(s, log, yes) == ("allow", None)
    assert (no.settle(), yes.settle()) == (0, 1)
    workers = set(children(s.proc.pid))
    assert {r["pid"] for r in records(log)} <= workers


def test_hup_changes_the_policy(tmp_path, listeners):
    target = listeners()
    port, log = free_port(), tmp_path / "egress.log"
    conf = tmp_path / "hup.conf.py"
    base = f"bind = '127.0.0.1:{port}'\negress_log = {str(log)!r}\ngraceful_timeout = 1\n"
    conf.write_text(base)
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "egress_app:app", "-c", str(conf),
                             "--chdir", str(APPS)], stderr=open(tmp_path / "err.log", "wb"))
    with reaped(proc):
        wait_for_port(port, proc)
        s = Running(port, proc)
        first = booted(s, 1)
        assert verdict(s, log, target) == ("allow", None)
        conf.write_text(base + f"egress_deny = ['127.0.0.1:{target.port}']\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: (k := children(proc.pid)) and k != first and len(k) == 1)
        booted(s, 1)
        assert verdict(s, log, target) == ("deny", f"127.0.0.1:{target.port}")
        assert target.settle() == 1  # only the attempt before the HUP
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_reload_keeps_egress_in_the_new_worker(serve, tmp_path, listeners):
    no = listeners()
    spec = f"127.0.0.1:{no.port}"
    live = tmp_path / "egress_live.py"
    live.write_text("from egress_app import app  # version 1\n")
    log = tmp_path / "egress.log"
    s = serve("egress_live:app", "--reload", "--pythonpath", str(tmp_path), "--egress-log", str(log),
              "--egress-deny", spec)
    first = call(s.port, "/env")[1]["pid"]
    assert verdict(s, log, no) == ("deny", spec)
    live.write_text("from egress_app import app  # version 2\n")
    later = os.stat(live).st_mtime + 5  # a new mtime without waiting for the clock
    os.utime(live, (later, later))
    wait_until(lambda: call(s.port, "/env")[1]["pid"] != first)
    assert verdict(s, log, no) == ("deny", spec)
    assert {r["pid"] for r in records(log)} == {first, call(s.port, "/env")[1]["pid"]}
    assert no.settle() == 0


def test_the_log_on_stdout(serve, tmp_path, listeners):
    target = listeners()
    s = serve("egress_app:app", "--egress-log", "-")
    _, got = call(s.port, f"/socket?to=127.0.0.1:{target.port}")
    line = wait_until(lambda: [ln for ln in s.out().splitlines() if got["request_id"] in ln])
    rec = json.loads(line[0])
    check(rec, pid=got["pid"], request_id=got["request_id"], method="GET", path="/socket", proto="tcp",
          addr="127.0.0.1", port=target.port, verdict="allow", ms_known=True)


def test_usr1_reopens_the_egress_log(serve, tmp_path, listeners):
    target = listeners()
    s, log = start(serve, tmp_path, "-w", "1")
    booted(s, 1)
    verdict(s, log, target)
    log.rename(tmp_path / "egress.log.1")
    s.proc.send_signal(signal.SIGUSR1)
    # The worker reopens on its own signal: a request keeps writing to the old file until
    # then; bounded in count, every one after the first in the new file goes there.
    for _ in range(200):
        _, got = call(s.port, f"/socket?to=127.0.0.1:{target.port}")
        if log.exists() and any(r["request_id"] == got["request_id"] for r in records(log)):
            break
    else:
        raise AssertionError("no record reached the reopened egress log")
    old = len(records(tmp_path / "egress.log.1"))
    for _ in range(5):
        call(s.port, f"/socket?to=127.0.0.1:{target.port}")
    wait_until(lambda: len(records(log)) >= 6)
    assert len(records(tmp_path / "egress.log.1")) == old


RUN_SCRIPT = """
import sys
sys.path.insert(0, {apps!r})
import ferrule
from egress_app import app
ferrule.run(app, bind="127.0.0.1:{port}", egress_log={log!r}, egress_deny={spec!r})  # one string: a list of one
"""


def test_ferrule_run_takes_the_egress_settings(tmp_path, listeners):
    no, yes = listeners(), listeners()
    port, log = free_port(), tmp_path / "run.log"
    spec = f"127.0.0.1:{no.port}"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(RUN_SCRIPT).format(
        apps=str(APPS), port=port, log=str(log), spec=spec)])
    with reaped(proc):
        wait_for_port(port, proc)
        s = Running(port, proc)
        assert verdict(s, log, no) == ("deny", spec)
        assert verdict(s, log, yes) == ("allow", None)
        assert all(r["pid"] == proc.pid for r in records(log))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert (no.settle(), yes.settle()) == (0, 1)


#: `ready` raises so that a SPEC wrongly accepted still ends the child.
BAD_RUN = """
import ferrule

def ready(addresses):
    raise RuntimeError("accepted")

try:
    ferrule.run(lambda e, s: [], ready=ready, bind="127.0.0.1:0", egress_deny=["10.0.0.0/99"])
except ferrule.ConfigError as e:
    print("ConfigError", e)
"""


def test_ferrule_run_refuses_a_bad_spec():
    r = subprocess.run([sys.executable, "-c", BAD_RUN], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("ConfigError") and "10.0.0.0/99" in r.stdout, r
