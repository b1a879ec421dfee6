"""The master's side of the metrics (docs/observability.md): the registry made before
the first fork, a slot per worker position, the counts of a reaped worker folded into
the totals of workers gone, and why each worker was replaced. The Rust core does the
counting and serves ``--metrics-bind`` on a thread of this process that never runs
Python (``crates/ferrule-server/src/metrics/``)."""

from __future__ import annotations

import signal
from typing import List, Optional

from ferrule import _ferrule

#: What a worker adds after ``R`` on its pipe (worker.py, ticker.py): why it asks to
#: be replaced, as ``ferrule_worker_restarts_total``'s reason label.
REASON_CODES = {"max-requests": b"m", "memory": b"x", "timeout": b"t", "reload": b"f", "descriptors": b"d"}
_BY_CODE = {code[0]: reason for reason, code in REASON_CODES.items()}

#: Slots: enough for every worker and its replacement during a HUP, with room for TTIN.
MIN_SLOTS = 64

_free: List[int] = []


def start(arbiter, upgrading: bool) -> Optional[str]:
    """Makes the registry and starts the endpoint (BindError when its address cannot be
    used, unless ``upgrading``: the old master holds it until it leaves); returns the
    address to log, or None without ``--metrics-bind``."""
    slots = max(MIN_SLOTS, 4 * arbiter.num_workers)
    url = _ferrule.metrics_open(arbiter.core, slots, upgrading)
    _free[:] = range(_ferrule.metrics_slots())
    return url


def take_slot(w) -> None:
    """Before the fork: the worker's position in the shared region (None when every
    slot is taken; that worker's requests are then not counted)."""
    w.metrics_slot = _free.pop(0) if _free else None
    if w.metrics_slot is None and _ferrule.metrics_slots():
        w.log.warning("metrics: no free slot for a new worker; its requests are not counted")


def attach(w) -> None:
    """In the new worker: the master's endpoint socket is closed, its counts go to its slot."""
    _ferrule.metrics_attach(getattr(w, "metrics_slot", None))


def heard(w, data: bytes) -> None:
    """A worker's pipe said ``R`` followed by a reason code."""
    i = data.find(b"R")
    if i >= 0 and i + 1 < len(data) and data[i + 1] in _BY_CODE:
        w.restart_reason = _BY_CODE[data[i + 1]]


def replacing(w, reason: str) -> None:
    """The master decided to replace ``w`` (HUP: reload; a silent worker: timeout)."""
    if getattr(w, "restart_reason", None) is None:
        w.restart_reason = reason


def reaped(arbiter, w, code: int) -> None:
    """``w`` is gone: its slot joins the totals and is free again; its replacement is
    counted by reason (a worker that died of its own accord is a crash; one stopped by
    the master without a reason, TTOU or a stop, is not a restart)."""
    slot = getattr(w, "metrics_slot", None)
    if slot is not None:
        _ferrule.metrics_retire(slot)
        _free.append(slot)
    reason = getattr(w, "restart_reason", None)
    if reason is None and code != 0 and not (code < 0 and -code in w.sent):
        reason = "crash"
    if reason is not None and (reason == "crash" or w.retiring or signal.SIGKILL in w.sent):
        _ferrule.metrics_restart(reason)
    workers(arbiter)


def workers(arbiter) -> None:
    """``ferrule_workers`` and statsd's ``gunicorn.workers``: the worker processes alive."""
    _ferrule.metrics_workers(len(arbiter.WORKERS))
