"""--server-timing and the %(Q)s / %(F)s access-log atoms: the field is absent by
default, present with queue and app times when on, the app's own kept with `on` and
joined with `always`."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys

from conftest import wait_until

FIELD = re.compile(r"^queue;dur=\d+\.\d{3}, app;dur=(\d+\.\d{3})$")


def fetch(port, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status, r.msg.get_all("Server-Timing") or []
    finally:
        c.close()


def test_absent_by_default(serve):
    s = serve("metrics_app:app")
    assert fetch(s.port) == (200, [])


def test_on_adds_queue_and_app_times_and_keeps_the_app_s_own(serve):
    s = serve("metrics_app:app", "--server-timing")
    status, fields = fetch(s.port, "/sleep?0.05")
    assert status == 200 and len(fields) == 1 and FIELD.match(fields[0]), fields
    assert float(FIELD.match(fields[0]).group(1)) >= 50.0
    assert fetch(s.port, "/own-timing") == (200, ["db;dur=7"])


def test_always_adds_beside_the_app_s_own(serve):
    s = serve("metrics_app:app", "--server-timing", "always")
    status, fields = fetch(s.port, "/own-timing")
    assert fields[0] == "db;dur=7" and FIELD.match(fields[1]), fields


def test_queue_and_first_byte_atoms(serve):
    s = serve("metrics_app:app", "--access-logfile", "-", "--access-logformat", "%(s)s Q=%(Q)s F=%(F)s D=%(D)s")
    fetch(s.port, "/sleep?0.02")
    line = wait_until(lambda: [x for x in s.out().splitlines() if x.startswith("200 ")])[0]
    m = re.match(r"^200 Q=(\d+) F=(\d+) D=(\d+)$", line)
    assert m, line
    q, f, d = map(int, m.groups())
    assert f >= 20_000 and q <= f <= d, line


def test_a_bad_value_is_one_line(tmp_path):
    conf = tmp_path / "t.conf.py"
    conf.write_text("server_timing = 'sometimes'\n")
    apps = os.path.join(os.path.dirname(__file__), "..", "apps")
    for args in (["--server-timing", "sometimes"], ["-c", str(conf)]):
        r = subprocess.run([sys.executable, "-m", "ferrule", "metrics_app:app", *args, "--check-config"],
                           capture_output=True, text=True, timeout=60, cwd=apps)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "must be one of off, on, always" in r.stderr, r.stderr
