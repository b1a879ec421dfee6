"""Process limits set at start-up."""

from __future__ import annotations

import resource
from typing import Optional, Tuple


def _nr_open() -> int:
    """The kernel's ceiling for RLIMIT_NOFILE (an unlimited hard limit cannot be reached)."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024 * 1024


def raise_fd_limit() -> Optional[Tuple[int, int]]:
    """Raises the soft descriptor limit (RLIMIT_NOFILE) to the hard one, as nginx's
    worker_rlimit_nofile and Go do: the soft limit systemd and shells give (often 1024)
    is there for programs using select(), and a server holding a descriptor per
    connection meets it long before the machine is busy. Workers inherit it. Returns
    (old, new) when it changed; never fails: the limit then stays as it was."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = _nr_open() if hard == resource.RLIM_INFINITY else hard
        if soft != resource.RLIM_INFINITY and soft >= target:
            return None
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return soft, target
    except (OSError, ValueError):
        return None


def log_fd_limit(log, raised: Optional[Tuple[int, int]]) -> None:
    if raised is not None:
        log.debug(f"file descriptor limit (RLIMIT_NOFILE) raised from {raised[0]} to {raised[1]}")
