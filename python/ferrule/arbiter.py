"""The master process: binds, forks workers (its only thread besides the main one is
``--metrics-bind``'s, in Rust, which takes no lock a worker uses), keeps their
number right, and turns gunicorn's signals into actions.

The master never serves a request. It sleeps in ``select`` on a self-pipe (woken by
signals) and the workers' pipes (heartbeats and messages, see ``worker.py``).
Starting, reaping and timing out workers is ``pool.py``; the pid file ``pidfile.py``.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from typing import Callable, Dict, List, Optional, Tuple

from ferrule import _ferrule, daemon, limits, metrics, pool, systemd, upgrade
from ferrule.halt import HaltServer
from ferrule.hooks import Worker
from ferrule.log import Log
from ferrule.pidfile import remove_pidfile, write_pidfile
from ferrule.pool import RESPAWN_FIRST
from ferrule.settings import Settings

SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGTTIN,
           signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCHLD)
#: How long a quick stop (INT, QUIT) waits for workers before killing them.
QUICK_WAIT = 2.0


class Arbiter(pool.Pool, upgrade.Upgrades):
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
        #: The unix socket paths this master made, which it removes when it stops.
        self._bound_here: List[str] = []
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
        # Sockets systemd or an fd:// bind handed in belong to whoever made them (systemd
        # keeps listening across restarts): only the unix sockets bound here are unlinked.
        given = set(inherited) if inherited and not handed else set()
        given |= {int(b[5:]) for b in self.cfg.bind if b.startswith("fd://") and b[5:].isdigit()}
        self._bound_here = [url for fd, url in self.listeners if fd not in given]
        metrics_url = metrics.start(self, upgrading=bool(handed))
        if handed and self.master_pid:
            self.log.info(f"Using {len(handed)} socket(s) of the master being upgraded (pid {self.master_pid})")
        elif handed:
            self.log.info(f"Using {len(handed)} socket(s) passed in FERRULE_FD/GUNICORN_FD")
        elif inherited:
            self.log.info(f"Using {len(inherited)} socket(s) from systemd (LISTEN_FDS)")
        self.log.info(f"Starting ferrule {_ferrule.__version__}")
        uwsgi = self.cfg.protocol == "uwsgi"
        for _, url in self.listeners:
            # A uwsgi bind says so: `curl` against it gets no HTTP answer.
            if uwsgi and url.startswith("http://"):
                url = "uwsgi://" + url[len("http://"):]
            elif uwsgi:
                url += " (uwsgi)"
            self.log.info(f"Listening at: {url} ({self.pid})")
        if metrics_url:
            self.log.info(f"Metrics at: {metrics_url} (/metrics, /healthz, /readyz)")
        if self.cfg.proxy_protocol != "off":
            self.log.info(f"PROXY protocol ({self.cfg.proxy_protocol}) required from {self.cfg.proxy_allow_ips}")
        if uwsgi and self.cfg.forwarded_remote_addr != "off":
            self.log.warning("forwarded_remote_addr has no effect with protocol = 'uwsgi': REMOTE_ADDR is the "
                             "front server's variable (resolve the client in nginx: real_ip_header)")
        self.log.info(f"Using {self.num_workers} worker(s), up to {self.cfg.threads} threads each")
        self._warn_dns(self.core)
        if self.cfg.pidfile:
            write_pidfile(self.cfg.pidfile, self.pid, self.master_pid)
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

    # Signals ---------------------------------------------------------------------

    def _set_workers(self, n: int) -> None:
        old, self.num_workers = self.num_workers, n
        if n != old:
            self.log.info(f"Number of workers: {old} -> {n}")
            self.call_hook("nworkers_changed", self, n, old)

    def _warn_dns(self, core: _ferrule.Config) -> None:
        # Once per configuration read, here rather than in each worker.
        hint = _ferrule.egress_dns_hint(core)
        if hint:
            self.log.warning(hint)

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
            self._warn_dns(core)
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
                metrics.replacing(w, "reload")

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
            remove_pidfile(self._pidfile, self.pid)
        if self.reexec_pid or self.master_pid:
            return  # the other master of an upgrade serves the unix sockets
        for url in self._bound_here:
            if url.startswith("unix:"):
                try:
                    os.unlink(url[5:])
                except OSError:
                    pass


def preload(load: Callable[[], Callable]) -> Callable:
    """Imports the app in the master, then freezes what exists so the workers share it
    copy-on-write (the collector would otherwise touch every object's page)."""
    app = load()
    gc.collect()
    gc.freeze()
    return app
