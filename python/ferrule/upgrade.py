"""gunicorn's binary upgrade (``kill -USR2``): the master forks a child that executes
the command that started it again (the same interpreter, ``sys.orig_argv``, the
starting directory and environment), handing it the listening sockets by number in
``FERRULE_FD``. The new master serves those sockets and binds nothing; the old one
keeps serving until it is told to stop (``WINCH`` stops its workers, ``TERM`` or
``QUIT`` stops it).

The variables: ``FERRULE_FD`` (comma-separated descriptors) and ``FERRULE_PID`` (the
old master); gunicorn's ``GUNICORN_FD`` and ``GUNICORN_PID`` are read too.
"""

from __future__ import annotations

import os
import sys
from typing import List, NoReturn, Optional, Tuple

FD_VARS = ("FERRULE_FD", "GUNICORN_FD")
PID_VARS = ("FERRULE_PID", "GUNICORN_PID")
#: Not passed on: the new master's sockets come in FERRULE_FD, not from systemd.
DROPPED = FD_VARS + PID_VARS + ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def _getcwd() -> str:
    """The working directory as the shell spelled it ($PWD) when it is the same
    directory: a deploy that starts in `/srv/app/current` (a symlink switched to each
    release) must re-execute there, not in the release it resolved to at start."""
    cwd = os.getcwd()
    pwd = os.environ.get("PWD")
    try:
        if pwd and os.path.samefile(pwd, cwd):
            return pwd
    except OSError:
        pass
    return cwd


#: How this process was started, taken when ferrule is imported: before --chdir and
#: --env change the directory and the environment (the new master applies them again).
START_CWD = _getcwd()
START_ENV = dict(os.environ)
START_ARGV = [sys.executable] + list(getattr(sys, "orig_argv", sys.argv)[1:])


class UpgradeError(Exception):
    """A FERRULE_FD/GUNICORN_FD value that is not a list of descriptor numbers."""


def inherited() -> Tuple[List[int], Optional[int]]:
    """The sockets and the old master's pid handed over by an upgrading master (or by
    whatever set GUNICORN_FD), and removes the variables so that workers and the app's
    subprocesses do not see them. ([], None) when there are none."""
    fds_text = next((os.environ[n] for n in FD_VARS if os.environ.get(n)), None)
    pid_text = next((os.environ[n] for n in PID_VARS if os.environ.get(n)), None)
    for name in FD_VARS + PID_VARS:
        os.environ.pop(name, None)
    if not fds_text:
        return [], None
    try:
        fds = [int(part) for part in fds_text.split(",") if part.strip()]
    except ValueError:
        raise UpgradeError(f"FERRULE_FD={fds_text!r}: expected comma-separated descriptor numbers") from None
    if not fds or min(fds) < 0:
        raise UpgradeError(f"FERRULE_FD={fds_text!r}: expected comma-separated descriptor numbers")
    for fd in fds:
        try:
            os.set_inheritable(fd, False)  # our workers get them by fork, nothing else by exec
        except OSError:
            pass  # not open: binding it says so
    pid = int(pid_text) if pid_text and pid_text.isdigit() else None
    return fds, pid


def exec_new_master(server, fds: List[int]) -> NoReturn:
    """In the child forked by the old master: calls ``pre_exec(server)``, then becomes
    the new master. Never returns; if anything fails the child exits 1 and the old
    master, which reaps it, carries on."""
    try:
        server.call_hook("pre_exec", server, fatal=True)
        env = {k: v for k, v in START_ENV.items() if k not in DROPPED}
        env["FERRULE_FD"] = ",".join(str(fd) for fd in fds)
        env["FERRULE_PID"] = str(os.getppid())
        for fd in fds:
            os.set_inheritable(fd, True)
        os.chdir(START_CWD)
        os.execve(START_ARGV[0], START_ARGV, env)
    except BaseException as exc:  # noqa: BLE001 - this child must never return
        try:
            server.log.error(f"USR2: the new master could not be started: {type(exc).__name__}: {exc}")
        except BaseException:  # noqa: BLE001
            pass
    finally:
        os._exit(1)
