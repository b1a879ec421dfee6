"""``--daemon`` (detach into the background) and ``--capture-output``.

Unlike gunicorn, whose command returns as soon as it has forked, the command that
starts a daemon waits until the master is ready (listening, pid file written,
``when_ready`` run) and exits 0, or exits with the master's start-up error and code:
a script that runs ``ferrule --daemon`` and then sends a request finds it served, and
a port in use is an error in the script, not a line in a log nobody reads.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Dict, Optional

#: In the daemon until it is ready: the pipe to the command that started it.
_report_fd: Optional[int] = None


def daemonize(keep_stdio: bool) -> None:
    """Double fork and setsid; the original process waits for the daemon's report and
    exits with it. stdin (and stdout/stderr unless keep_stdio) become /dev/null."""
    global _report_fd
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    first = os.fork()
    if first:
        os.close(w)
        os.waitpid(first, 0)
        _wait_for_report(r)
    os.close(r)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0,) if keep_stdio else (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    _report_fd = w


def _wait_for_report(r: int) -> None:
    data = b""
    # "ready" needs no EOF: a process the master forked in a hook (a sidecar) may hold
    # the pipe open for as long as it runs.
    while data != b"ready" and (chunk := os.read(r, 4096)):
        data += chunk
    if data == b"ready":
        os._exit(0)
    code, _, message = data.decode(errors="replace").partition(" ")
    if not code.isdigit():
        code, message = "1", "the daemon exited during start-up (see the error log)"
    print(f"ferrule: error: {message}", file=sys.stderr, flush=True)
    os._exit(int(code))


def report(message: str) -> None:
    """In the daemon: the master is ready (``ready``) or failed (``CODE message``)."""
    global _report_fd
    if _report_fd is None:
        return
    try:
        os.write(_report_fd, message.encode())
    except OSError:
        pass
    os.close(_report_fd)
    _report_fd = None


def report_when_ready(hooks: Dict[str, Callable]) -> Dict[str, Callable]:
    """Hooks whose when_ready (the user's, if any) also tells the waiting command."""
    user = hooks.get("when_ready")

    def when_ready(server):
        try:
            if user is not None:
                user(server)
        finally:
            report("ready")

    return {**hooks, "when_ready": when_ready}


def capture_output(errorlog: Optional[str]) -> None:
    """gunicorn's --capture-output: with a file error log, stdout and stderr of this
    process and of every worker forked after it go into that file (no-op for stderr)."""
    if errorlog in (None, "-"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(errorlog, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
