"""-R/--enable-stdio-inheritance (gunicorn's): with --daemon, stdout and stderr stay what
the starting command had instead of /dev/null, so the app's prints and a stderr error
log still reach them."""

import os
import signal
import subprocess
import sys

from conftest import APPS, free_port, get, wait_until


def test_daemon_with_stdio_inheritance_keeps_stdout_and_stderr(tmp_path):
    port, pidfile = free_port(), tmp_path / "d.pid"
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out, "wb") as o, open(err, "wb") as e:
        r = subprocess.run([sys.executable, "-m", "ferrule", "logging_app:app", "-b", f"127.0.0.1:{port}",
                            "--daemon", "-R", "-p", str(pidfile)], cwd=APPS, stdout=o, stderr=e, timeout=60)
    assert r.returncode == 0, err.read_text()
    pid = int(pidfile.read_text())
    try:
        fds = {n: os.readlink(f"/proc/{pid}/fd/{n}") for n in (0, 1, 2)}
        assert fds[0] == "/dev/null" and fds[1] == str(out) and fds[2] == str(err), fds
        assert get(port, "/print")[0] == 200
        wait_until(lambda: "printed by" in out.read_text() and "to stderr from" in err.read_text())
        assert "Booting worker with pid" in err.read_text()  # the error log is stderr: kept too
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"))
