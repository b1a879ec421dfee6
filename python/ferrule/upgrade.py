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
import signal
from typing import List, NoReturn, Optional, Tuple

from ferrule import systemd

#: The old master's pid file during an upgrade, as nginx names it.
OLDBIN = ".oldbin"
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


def rename_pidfile(path: str, to: str, log) -> Optional[str]:
    """Moves this master's pid file; returns its name afterwards."""
    try:
        os.replace(path, to)
        return to
    except OSError as exc:
        log.error(f"cannot rename the pid file {path} to {to}: {exc}")
        return path


class Upgrades:
    """The master's side of USR2 and WINCH (mixed into Arbiter, which has the state:
    reexec_pid, master_pid, _pidfile, _winched_from)."""

    def reexec(self) -> None:
        """USR2: starts a new master (the command that started this one, run again)
        on the same sockets, beside this one (see the module docstring)."""
        if self.reexec_pid:
            self.log.warning(f"USR2 ignored: an upgrade is in progress (new master: pid {self.reexec_pid})")
            return
        if self.master_pid:
            self.log.warning(f"USR2 ignored: this master is the new one of an upgrade; stop the old master "
                             f"(pid {self.master_pid}) first")
            return
        self.log.info("Handling signal: usr2: starting a new master (binary upgrade)")
        if self._pidfile:
            self._pidfile = rename_pidfile(self._pidfile, self._pidfile + OLDBIN, self.log)
        try:
            pid = os.fork()
        except OSError as exc:
            self.log.error(f"USR2: cannot fork the new master: {exc}")
            self._restore_pidfile()
            return
        if pid == 0:
            exec_new_master(self, [fd for fd, _ in self.listeners])
        self.reexec_pid = pid
        self.log.info(f"New master starting: pid {pid}; WINCH to this master (pid {self.pid}) stops its "
                      f"workers, TERM stops it")

    def _restore_pidfile(self) -> None:
        if self._pidfile and self._pidfile.endswith(OLDBIN) and self.cfg.pidfile:
            self._pidfile = rename_pidfile(self._pidfile, self._pidfile[: -len(OLDBIN)], self.log)

    def _new_master_exited(self, code: int) -> None:
        """The new master ended while this one still runs: the upgrade failed or was
        rolled back, and this master is the server again (gunicorn's behaviour)."""
        pid, self.reexec_pid = self.reexec_pid, 0
        how = f"exited with code {code}" if code >= 0 else f"was ended by {signal.Signals(-code).name}"
        self.log.warning(f"The new master (pid {pid}) {how}; this master (pid {self.pid}) carries on")
        self._restore_pidfile()
        if self._winched_from is not None:
            self._set_workers(self._winched_from)
            self._winched_from = None

    def _maybe_promote(self) -> None:
        """In a new master: once the old master has exited (we were reparented), this
        one is the only master; systemd is told (accepted with NotifyAccess=all; with
        the default NotifyAccess=main the old master hands MAINPID over as it stops)."""
        if self.master_pid and os.getppid() != self.master_pid:
            self.log.info(f"Master has been promoted: the old master (pid {self.master_pid}) has exited")
            self.master_pid = 0
            systemd.notify(f"MAINPID={self.pid}")

    def winch(self) -> None:
        """WINCH: during an upgrade, stops this (old) master's workers gracefully; the
        master keeps the sockets so that HUP (or the new master's failure) can bring
        them back. Otherwise ignored: a terminal sends WINCH when it is resized."""
        if not self.reexec_pid and not getattr(self.cfg, "daemon", False):
            self.log.info("WINCH ignored: no upgrade in progress (terminals send WINCH when resized)")
            return
        self.log.info("Handling signal: winch: stopping the workers gracefully; the master stays")
        if self._winched_from is None:
            self._winched_from = self.num_workers
        self._set_workers(0)
