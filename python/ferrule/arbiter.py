"""The master process: binds, forks workers before any thread exists, keeps their
number right, and turns gunicorn's signals into actions.

The master never serves a request. It sleeps in ``select`` on a self-pipe (woken by
signals) and the workers' pipes (heartbeats and messages, see ``worker.py``).
"""

from __future__ import annotations

import gc
import os
import select
import signal
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

from ferrule import _ferrule, daemon, limits, systemd, upgrade
from ferrule import worker as worker_mod
from ferrule.log import Log
from ferrule.settings import Settings
from ferrule.worker import Worker

SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGTTIN,
           signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCHLD)
#: How long a quick stop (INT, QUIT) waits for workers before killing them.
QUICK_WAIT = 2.0
#: A replacement worker that cannot load the app (after one has booted) is retried
#: after 1 s, then 2, 4, ... up to 60 s; the worker it replaces keeps serving meanwhile.
RESPAWN_FIRST, RESPAWN_MAX = 1.0, 60.0


class HaltServer(Exception):
    def __init__(self, reason: str, code: int):
        super().__init__(reason)
        self.reason, self.code = reason, code


class Arbiter(upgrade.Upgrades):
    """The ``server`` argument of hooks (gunicorn's attribute names)."""

    def __init__(self, cfg: Settings, core: _ferrule.Config, hooks: Dict[str, Callable],
                 reload_config: Callable[[], Tuple[Settings, _ferrule.Config, dict]], app: Optional[Callable] = None):
        self.cfg = cfg
        #: ``cfg`` as the Rust core checked it (``_ferrule.Config``); workers serve with it.
        self.core = core
        self.hooks = hooks
        self._reload_config = reload_config
        self.app = app
        self.pid = os.getpid()
        self.num_workers = cfg.workers
        self.WORKERS: Dict[int, Worker] = {}
        self.log = Log()
        self.listeners: List[Tuple[int, str]] = []
        self.worker_age = 0
        self._signals: List[int] = []
        self._wake_r = self._wake_w = -1
        self._ready_sent = False
        self._booted_once = False
        #: Binary upgrade (gunicorn's names): the new master this one started with USR2,
        #: and, in a new master, the old one while it runs.
        self.reexec_pid = 0
        self.master_pid = 0
        #: The pid file this master wrote (renamed to PIDFILE.oldbin during an upgrade).
        self._pidfile: Optional[str] = None
        #: The number of workers before WINCH stopped them, restored if the upgrade fails.
        self._winched_from: Optional[int] = None
        self._respawn_at = 0.0
        self._respawn_delay = RESPAWN_FIRST

    # Hooks -----------------------------------------------------------------------

    def call_hook(self, name: str, *args, fatal: bool = False) -> None:
        hook = self.hooks.get(name)
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            self.log.exception(f"Exception in {name} hook")
            if fatal:
                raise

    # Start-up --------------------------------------------------------------------

    def start(self) -> None:
        os.umask(self.cfg.umask)
        self.call_hook("on_starting", self, fatal=True)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w)
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)
        # Before binding and forking: every worker inherits it.
        limits.log_fd_limit(self.log, limits.raise_fd_limit())
        inherited = systemd.listen_fds()
        try:
            handed, old_master = upgrade.inherited()
        except upgrade.UpgradeError as exc:
            raise HaltServer(str(exc), 2) from None
        if handed:
            inherited = handed
            # The old master's pid only while it is our parent (see _maybe_promote).
            self.master_pid = old_master if old_master == os.getppid() else 0
        self.listeners = _ferrule.bind(self.core.inherit(inherited) if inherited else self.core)
        if handed and self.master_pid:
            self.log.info(f"Using {len(handed)} socket(s) of the master being upgraded (pid {self.master_pid})")
        elif handed:
            self.log.info(f"Using {len(handed)} socket(s) passed in FERRULE_FD/GUNICORN_FD")
        elif inherited:
            self.log.info(f"Using {len(inherited)} socket(s) from systemd (LISTEN_FDS)")
        self.log.info(f"Starting ferrule {_ferrule.__version__}")
        for _, url in self.listeners:
            self.log.info(f"Listening at: {url} ({self.pid})")
        self.log.info(f"Using {self.num_workers} worker(s), up to {self.cfg.threads} threads each")
        if self.cfg.pidfile:
            _write_pidfile(self.cfg.pidfile, self.pid, self.master_pid)
            self._pidfile = self.cfg.pidfile
        self.call_hook("when_ready", self)

    def _on_signal(self, signum, frame) -> None:
        if len(self._signals) < 20:
            self._signals.append(signum)

    # Main loop -------------------------------------------------------------------

    def run(self) -> int:
        self.start()
        try:
            while True:
                self._maybe_promote()
                self._manage()
                self._wait(1.0)
                while self._signals:
                    sig = self._signals.pop(0)
                    if sig == signal.SIGCHLD:
                        continue  # reaped below
                    if sig == signal.SIGTERM:
                        return self.stop(graceful=True, why="Handling signal: term")
                    if sig in (signal.SIGINT, signal.SIGQUIT):
                        name = signal.Signals(sig).name[3:].lower()
                        return self.stop(graceful=False, why=f"Handling signal: {name}")
                    if sig == signal.SIGHUP:
                        self.reload()
                    elif sig == signal.SIGTTIN:
                        self._set_workers(self.num_workers + 1)
                    elif sig == signal.SIGTTOU:
                        self._set_workers(max(self.num_workers - 1, 1))
                    elif sig == signal.SIGUSR1:
                        self.reopen_logs()
                    elif sig == signal.SIGUSR2:
                        self.reexec()
                    elif sig == signal.SIGWINCH:
                        self.winch()
                self._reap()
                self._check_workers()
        except HaltServer as h:
            self.log.error(h.reason)
            self.stop(graceful=False, why="halting")
            return h.code

    def _wait(self, timeout: float) -> None:
        fds = [self._wake_r] + [w.pipe_r for w in self.WORKERS.values()]
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        now = time.monotonic()
        for fd in ready:
            try:
                data = os.read(fd, 512)
            except OSError:
                continue
            if fd == self._wake_r:
                continue
            w = next((w for w in self.WORKERS.values() if w.pipe_r == fd), None)
            if w is None:
                continue
            w.last_beat = now
            if b"U" in data and not w.booted:
                w.booted = self._booted_once = True
                self._respawn_delay = RESPAWN_FIRST
                self._on_ready(w)
            if b"R" in data:
                w.retiring = True

    def _on_ready(self, w: Worker) -> None:
        old = self.WORKERS.get(w.replaces) if w.replaces else None
        if old is not None and old.term_at is None:
            self.log.info(f"Worker {w.pid} is accepting; stopping worker {old.pid} it replaces")
            self._signal(old, signal.SIGTERM)
        if not self._ready_sent and sum(1 for x in self.WORKERS.values() if x.booted) >= self.num_workers:
            self._ready_sent = True
            systemd.notify(f"READY=1\nSTATUS=ferrule: {self.num_workers} worker(s) accepting\nMAINPID={self.pid}")

    def _manage(self) -> None:
        """Starts workers until enough serve; each replacement names the worker it
        replaces, which is stopped only once the replacement accepts. Extra workers
        (TTOU) are stopped oldest first."""
        live = [w for w in self.WORKERS.values() if w.term_at is None]
        keep = [w for w in live if not w.retiring]
        waiting = [w for w in live if w.retiring and not any(x.replaces == w.pid for x in keep)]
        # Until one worker has booted, only one boots: an app that cannot be imported
        # stops the server with its error shown once, not once per worker.
        want = self.num_workers if self._booted_once else min(self.num_workers, 1)
        # After a replacement failed to load the app: no new worker before the back-off
        # ends, and the workers waiting for a replacement keep serving.
        backing_off = time.monotonic() < self._respawn_at
        while len(keep) < want and not backing_off:
            replaces = waiting.pop(0).pid if waiting else None
            keep.append(self.spawn(replaces))
        for w in sorted(keep, key=lambda w: w.age)[: max(len(keep) - want, 0)]:
            self._signal(w, signal.SIGTERM)
        # A retiring worker nobody replaces (fewer workers wanted now) just stops.
        for w in live:
            if w.retiring and not backing_off and not any(x.replaces == w.pid for x in self.WORKERS.values()):
                self._signal(w, signal.SIGTERM)

    def spawn(self, replaces: Optional[int] = None) -> Worker:
        self.worker_age += 1
        w = Worker(self.worker_age, self.cfg, self.pid)
        w.replaces = replaces
        w.pipe_r, w.pipe_w = os.pipe2(os.O_CLOEXEC)
        self.call_hook("pre_fork", self, w)
        # Until the child has its own handlers, a stop signal must wait (blocked), not
        # reach the master's handler copied into it, which would only queue it there.
        signal.pthread_sigmask(signal.SIG_BLOCK, worker_mod.STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                worker_mod.run(self, w)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, worker_mod.STOP_SIGNALS)
        os.close(w.pipe_w)
        w.pid = pid
        w.last_beat = time.monotonic()
        self.WORKERS[pid] = w
        return w

    def close_in_child(self, me: Worker) -> None:
        """In a new worker: drops the master's descriptors and other workers' pipes."""
        for fd in [self._wake_r, self._wake_w] + [w.pipe_r for w in self.WORKERS.values()] + [me.pipe_r]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.WORKERS = {}

    def _signal(self, w: Worker, sig: int) -> None:
        if sig == signal.SIGTERM and w.term_at is None:
            w.term_at = time.monotonic()
        w.sent.add(sig)
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.reexec_pid:
                self._new_master_exited(os.waitstatus_to_exitcode(status))
                continue
            w = self.WORKERS.pop(pid, None)
            if w is None:
                continue
            os.close(w.pipe_r)
            w.alive = False
            code = os.waitstatus_to_exitcode(status)
            self._log_exit(w, code)
            self.call_hook("child_exit", self, w)
            if not w.booted and code in (worker_mod.EXIT_APP_LOAD, worker_mod.EXIT_BOOT):
                what = "could not load the app" if code == worker_mod.EXIT_APP_LOAD else "failed to boot"
                if not self._booted_once:
                    raise HaltServer(f"Worker {pid} {what}; shutting down (the error is above)", code)
                self._back_off(w, what)

    def _back_off(self, w: Worker, what: str) -> None:
        """A replacement failed before it accepted, after the server had booted (a HUP
        or a recycled worker meeting a bad deploy): the server stays up on the workers
        it has, and the replacement is tried again later, each time twice as late."""
        now = time.monotonic()
        delay = self._respawn_delay
        if now >= self._respawn_at:  # one step per round, not per worker of a HUP
            self._respawn_at = now + delay
            self._respawn_delay = min(delay * 2, RESPAWN_MAX)
        else:
            delay = self._respawn_at - now
        old = self.WORKERS.get(w.replaces) if w.replaces else None
        kept = f"; worker {old.pid} it was to replace keeps serving" if old is not None else ""
        self.log.error(f"Worker {w.pid} {what} (the error is above){kept}; "
                       f"trying a new worker again in {delay:.0f}s")

    def _log_exit(self, w: Worker, code: int) -> None:
        """`code` is the exit code, or minus the signal that ended the worker."""
        if code == 0:
            self.log.info(f"Worker exiting (pid: {w.pid})")
        elif code < 0 and -code in w.sent:
            self.log.info(f"Worker (pid:{w.pid}) ended by the master's {signal.Signals(-code).name}")
        elif code < 0:
            name = signal.Signals(-code).name
            # The master's own SIGKILL is logged above, so this one came from elsewhere.
            hint = " Perhaps out of memory?" if -code == signal.SIGKILL else ""
            self.log.error(f"Worker (pid:{w.pid}) was sent {name}!{hint}")
        else:
            self.log.error(f"Worker (pid:{w.pid}) exited with code {code}")

    def _check_workers(self) -> None:
        now = time.monotonic()
        for w in list(self.WORKERS.values()):
            if signal.SIGKILL in w.sent:
                continue
            # A stopping worker sends no heartbeat; --graceful-timeout bounds it instead.
            # So does a worker that asked to be replaced (it may be stopping itself).
            silent = now - w.last_beat - (self.cfg.graceful_timeout if w.retiring else 0)
            if w.term_at is not None:
                if now - w.term_at > self.cfg.graceful_timeout + 2:
                    self.log.error(f"Worker {w.pid} still running {self.cfg.graceful_timeout:g}s after SIGTERM; "
                                   "killing it")
                    self._signal(w, signal.SIGKILL)
            elif self.cfg.timeout > 0 and silent > max(self.cfg.timeout, 2.0):
                self.log.critical(f"WORKER TIMEOUT (pid:{w.pid}): no heartbeat for {now - w.last_beat:.1f}s "
                                  "(something holds the GIL, e.g. a C extension); killing it")
                self.call_hook("worker_abort", w)
                self._signal(w, signal.SIGKILL)

    # Signals ---------------------------------------------------------------------

    def _set_workers(self, n: int) -> None:
        old, self.num_workers = self.num_workers, n
        if n != old:
            self.log.info(f"Number of workers: {old} -> {n}")
            self.call_hook("nworkers_changed", self, n, old)

    def reload(self) -> None:
        """HUP: re-read the configuration, then replace every worker; each old one is
        stopped only when its replacement accepts."""
        self.log.info("Hang up: reloading")
        if self._winched_from is not None:  # workers stopped by WINCH come back (rollback)
            self._set_workers(self._winched_from)
            self._winched_from = None
        # Whoever sends HUP after a failed replacement has likely fixed the files.
        self._respawn_at, self._respawn_delay = 0.0, RESPAWN_FIRST
        try:
            cfg, core, hooks = self._reload_config()
        except Exception as exc:  # a broken edit must not take the server down
            self.log.error(f"configuration not reloaded: {exc}")
            cfg, core, hooks = self.cfg, self.core, self.hooks
        old_n = self.cfg.workers
        self.cfg, self.core, self.hooks = cfg, core, hooks
        if cfg.workers != old_n:
            self._set_workers(cfg.workers)
        self.call_hook("on_reload", self)
        for w in self.WORKERS.values():
            if w.term_at is None:
                w.retiring = True

    def reopen_logs(self) -> None:
        try:
            _ferrule.reopen_logs()
            if self.cfg.capture_output:
                daemon.capture_output(self.cfg.error_logfile)
        except OSError as exc:
            self.log.error(f"cannot reopen log files: {exc}")
        for w in self.WORKERS.values():
            self._signal(w, signal.SIGUSR1)

    def stop(self, graceful: bool, why: str) -> int:
        if self.reexec_pid:
            # The upgrade is finished: the new master is the service now. STOPPING=1
            # would make systemd stop it too once this process exits.
            systemd.notify(f"MAINPID={self.reexec_pid}\nSTATUS=ferrule: upgraded, new master pid {self.reexec_pid}")
        else:
            systemd.notify("STOPPING=1")
        self.log.info(why)
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        deadline = time.monotonic() + (self.cfg.graceful_timeout + 1 if graceful else QUICK_WAIT)
        for w in self.WORKERS.values():
            self._signal(w, sig)
        while self.WORKERS and time.monotonic() < deadline:
            self._wait(0.05)
            try:
                self._reap()
            except HaltServer:
                pass
        for w in self.WORKERS.values():
            self._signal(w, signal.SIGKILL)
        while self.WORKERS:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.WORKERS.pop(pid, None)
        self.log.info("Shutting down: Master")
        self.call_hook("on_exit", self)
        self._cleanup()
        return 0

    def _cleanup(self) -> None:
        if self._pidfile:
            _remove_pidfile(self._pidfile, self.pid)
        if self.reexec_pid or self.master_pid:
            return  # the other master of an upgrade serves the unix sockets
        for _, url in self.listeners:
            if url.startswith("unix:"):
                try:
                    os.unlink(url[5:])
                except OSError:
                    pass


def _write_pidfile(path: str, pid: int, replaces: int = 0) -> None:
    """Writes `pid` to `path` unless another live process is named there (`replaces`,
    the old master of an upgrade, may be), as gunicorn does.

    The file is mode 0644 whatever the umask (the master runs under ``--umask``, 0 by
    default) and appears whole: written to a temporary file in the same directory,
    synced, then renamed over `path`, so a reader sees the old file or the new one,
    never an empty or partial one."""
    old = _pidfile_owner(path)
    if old and old not in (pid, replaces):
        raise HaltServer(f"pidfile {path}: already running on pid {old} (or the pid file is stale: "
                         f"remove it if pid {old} is not a ferrule master)", 1)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        raise HaltServer(f"pidfile {path}: cannot create it: {exc.strerror or exc}", 1) from None
    try:
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, f"{pid}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise HaltServer(f"pidfile {path}: cannot write it: {exc.strerror or exc}", 1) from None


def _pidfile_owner(path: str) -> int:
    """The live process a pid file names, or 0 (no file, no number, no such process).
    A process of another user (EPERM) is alive, as for gunicorn."""
    try:
        with open(path) as f:
            old = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0
    if old <= 0:
        return 0
    try:
        os.kill(old, 0)
    except ProcessLookupError:
        return 0
    except PermissionError:
        return old
    return old


def _remove_pidfile(path: str, pid: int) -> None:
    try:
        with open(path) as f:
            if int(f.read().strip() or 0) != pid:
                return
        os.unlink(path)
    except (OSError, ValueError):
        pass


def preload(load: Callable[[], Callable]) -> Callable:
    """Imports the app in the master, then freezes what exists so the workers share it
    copy-on-write (the collector would otherwise touch every object's page)."""
    app = load()
    gc.collect()
    gc.freeze()
    return app
