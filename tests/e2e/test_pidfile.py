"""The pid file (issue 21, point 6): mode 0644 whatever the umask (the master runs
under ``--umask``, 0 by default, as gunicorn's), replaced whole by a rename (a reader
sees the old file or the new one, never an empty or partial one), and a pid file
naming a live process refuses the start as gunicorn does."""

import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from conftest import APPS, free_port, wait_until


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [None, "077", "0"], ids=["default-umask-0", "umask-077", "umask-0"])
def test_the_pid_file_is_0644_whatever_the_umask(serve, tmp_path, umask):
    pidfile = tmp_path / "run" / "ferrule.pid"
    pidfile.parent.mkdir()
    args = ["--pid", str(pidfile)] + (["--umask", umask] if umask else [])
    before = os.umask(0)  # and the umask ferrule inherits is 0 too
    try:
        s = serve("proc:app", "-w", "1", *args)
    finally:
        os.umask(before)
    wait_until(pidfile.exists)
    assert pidfile.read_text() == f"{s.proc.pid}\n"
    assert oct(mode(pidfile)) == oct(0o644)
    # No temporary file is left beside it.
    assert os.listdir(pidfile.parent) == ["ferrule.pid"]
    assert s.stop() == 0
    assert not pidfile.exists()


def test_a_stale_pid_file_is_replaced_by_a_rename_never_seen_empty(serve, tmp_path):
    pidfile = tmp_path / "ferrule.pid"
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    stale_inode = os.stat(pidfile).st_ino
    held = open(pidfile)  # keeps the old inode from being reused for the new file
    seen = set()
    done = threading.Event()

    def read_all_along():
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            try:
                with open(pidfile) as f:
                    seen.add(f.read())
            except FileNotFoundError:
                seen.add(None)

    reader = threading.Thread(target=read_all_along)
    reader.start()
    try:
        s = serve("proc:app", "-w", "1", "--pid", str(pidfile))
        wait_until(lambda: pidfile.read_text() == f"{s.proc.pid}\n")
        time.sleep(0.1)
    finally:
        done.set()
        reader.join()
        held.close()
    # A file truncated then written in place would have been seen empty (or gone).
    assert seen <= {f"{dead.pid}\n", f"{s.proc.pid}\n"}, seen
    assert os.stat(pidfile).st_ino != stale_inode
    assert oct(mode(pidfile)) == oct(0o644)
    assert s.stop() == 0


def test_a_pid_file_naming_a_live_process_refuses_the_start(tmp_path):
    pidfile = tmp_path / "ferrule.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    port = free_port()
    cmd = [sys.executable, "-m", "ferrule", "proc:app", "-b", f"127.0.0.1:{port}", "--chdir", str(APPS),
           "--pid", str(pidfile)]
    r = subprocess.run(cmd, capture_output=True, timeout=30)
    assert r.returncode == 1, r.stderr
    err = r.stderr.decode()
    assert f"pidfile {pidfile}: already running on pid {os.getpid()}" in err
    assert "Traceback" not in err
    assert pidfile.read_text() == f"{os.getpid()}\n"
    assert os.listdir(tmp_path) == ["ferrule.pid"]

