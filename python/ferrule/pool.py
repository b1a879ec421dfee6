"""The master's workers: starting them (each replacement names the worker it
replaces), reading their pipes, reaping them, backing off when a replacement cannot
load the app, and killing the silent or the stuck. Mixed into ``Arbiter``, which has
the state: WORKERS, num_workers, worker_age, cfg, hooks, log, the self-pipe, and the
back-off (_booted_once, _respawn_at, _respawn_delay).
"""

from __future__ import annotations

import os
import select
import signal
import time
from typing import Optional

from ferrule import metrics, systemd
from ferrule import worker as worker_mod
from ferrule.halt import HaltServer
from ferrule.hooks import Worker

#: A replacement worker that cannot load the app (after one has booted), or any worker
#: that dies before it accepts, is retried after 1 s, then 2, 4, ... up to 60 s; the
#: worker it replaces keeps serving meanwhile.
RESPAWN_FIRST, RESPAWN_MAX = 1.0, 60.0


class Pool:
    """The master's side of its workers (see the module docstring)."""

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
                metrics.heard(w, data)

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
        metrics.take_slot(w)
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
        metrics.workers(self)
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
            metrics.reaped(self, w, code)
            self._log_exit(w, code)
            self.call_hook("child_exit", self, w)
            if not w.booted and code in (worker_mod.EXIT_APP_LOAD, worker_mod.EXIT_BOOT):
                what = "could not load the app" if code == worker_mod.EXIT_APP_LOAD else "failed to boot"
                if not self._booted_once:
                    raise HaltServer(f"Worker {pid} {what}; shutting down (the error is above)", code)
                self._back_off(w, what)
            elif not w.booted and w.term_at is None and code != 0 and not (code < 0 and -code in w.sent):
                # Died on its own before accepting (a crash while importing the app, a
                # post_fork hook calling os._exit): the next try waits, or a crash at
                # import would fork a worker as fast as the machine can.
                self._back_off(w, "died before it accepted")

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
                metrics.replacing(w, "timeout")
                self._signal(w, signal.SIGKILL)
