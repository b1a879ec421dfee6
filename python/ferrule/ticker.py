"""What a worker checks about every 100 ms while it serves (``Ticker``): its heartbeat
to the master, its parent, a request stuck past --timeout (the stacks of every thread
go to the error log), and the reasons to ask for a replacement: max-requests, memory,
changed source files (--reload), descriptors held by something other than its
connections."""

from __future__ import annotations

import os
import random
import sys
import threading
import time
import traceback
from typing import Optional

from ferrule.hooks import Worker
from ferrule.log import Log
from ferrule.metrics import REASON_CODES

HEARTBEAT_EVERY = 1.0
CHECK_EVERY = 1.0
#: How long accepts may fail for lack of descriptors, with few connections of the
#: worker's own, before it asks to be replaced when --timeout is 0 (off).
STARVED_AFTER = 30.0


def dump_stacks(log: Log, why: str) -> None:
    """Writes the Python stack of every thread of this process to the error log."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = [why]
    for ident, frame in sys._current_frames().items():
        parts.append(f"Thread {names.get(ident, 'ferrule runner')} ({ident}), most recent call last:")
        parts.append("".join(traceback.format_stack(frame)).rstrip("\n"))
    log.critical("\n".join(parts))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _source_mtimes(extra=()) -> dict:
    out = {}
    paths = [getattr(mod, "__file__", None) for mod in list(sys.modules.values())]
    for path in [p for p in paths if p and p.endswith(".py")] + list(extra):
        try:
            out[path] = os.stat(path).st_mtime
        except OSError:
            pass
    return out


class Ticker:
    """Called by the serving loop about every 100 ms: heartbeat, parent check, request
    timeout, and the reasons to be replaced. Returns True to stop this worker now.
    `starved` is (seconds, connections, limit) while accepts fail for lack of
    descriptors that the worker's own connections do not explain, else None."""

    def __init__(self, arbiter, worker: Worker, watch=()):
        self.arbiter, self.worker, self.cfg = arbiter, worker, worker.cfg
        #: Files --reload watches beside sys.modules (those a failed import named).
        self.watch = list(watch)
        self.limit = self.cfg.max_requests + random.randint(0, max(self.cfg.max_requests_jitter, 0)) \
            if self.cfg.max_requests > 0 else 0
        self.next_beat = 0.0
        self.next_check = time.monotonic() + CHECK_EVERY
        self.mtimes = _source_mtimes(self.watch) if self.cfg.reload else {}
        self.retiring = False
        self.stopping = False

    def send(self, msg: bytes) -> None:
        try:
            os.write(self.worker.pipe_w, msg)
        except OSError:
            pass

    def retire(self, why: str, reason: str) -> None:
        """`reason` is the metrics' label (``metrics.REASON_CODES``)."""
        if not self.retiring:
            self.retiring = True
            self.worker.log.info(f"Worker {self.worker.pid} asks to be replaced: {why}")
            self.send(b"R" + REASON_CODES[reason])

    def __call__(self, served: int, stalled: Optional[float], starved: Optional[tuple] = None) -> bool:
        if self.stopping:
            return False
        now = time.monotonic()
        if now >= self.next_beat:
            self.next_beat = now + HEARTBEAT_EVERY
            self.send(b".")
        if os.getppid() != self.worker.ppid:
            self.worker.log.info(f"Parent changed, shutting down: {self.worker}")
            self.stopping = True
            return True
        timeout = self.cfg.timeout
        if timeout > 0 and stalled is not None and stalled > timeout:
            dump_stacks(self.worker.log, f"WORKER TIMEOUT (pid:{self.worker.pid}): a request has been stuck in "
                                         f"the app for {stalled:.1f}s (timeout {timeout:g}s); stacks of every thread:")
            self.arbiter.call_hook("worker_abort", self.worker)
            self.retire("request timeout", "timeout")
            self.stopping = True
            return float(timeout)  # stop, answering 500 to requests stuck longer
        if self.limit and served >= self.limit:
            self.retire(f"max requests ({self.limit}) reached", "max-requests")
        if starved is not None:
            self._check_starved(*starved)
        if now >= self.next_check and not self.retiring:
            self.next_check = now + CHECK_EVERY
            if self.cfg.max_worker_memory > 0:
                rss = _rss_mb()
                if rss > self.cfg.max_worker_memory:
                    self.retire(f"resident memory {rss:.0f} MB over max-worker-memory "
                                f"{self.cfg.max_worker_memory} MB", "memory")
            if self.cfg.reload:
                fresh = _source_mtimes(self.watch)
                changed = [p for p, m in fresh.items() if self.mtimes.get(p, m) != m]
                self.mtimes.update(fresh)
                if changed:
                    self.retire(f"{changed[0]} modified", "reload")
        return False

    def _check_starved(self, during: float, connections: int, limit: int) -> None:
        """Accepts have been refused for lack of descriptors for `during` seconds while
        the worker's connections hold under half of them: something in the app holds
        the rest (a leak, most likely), and only a fresh process gets them back."""
        after = self.cfg.timeout if self.cfg.timeout > 0 else STARVED_AFTER
        if during > after:
            self.retire(f"out of file descriptors for {during:.0f}s with only {connections} connection(s) "
                        f"open (limit {limit}); the app may be leaking descriptors", "descriptors")
