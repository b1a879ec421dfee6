"""How the master stops: ``HaltServer`` carries the reason to log and the exit code,
raised where start-up, the pid file or the first worker's boot fails and caught by
the master's loop (``arbiter.py``)."""

from __future__ import annotations


class HaltServer(Exception):
    def __init__(self, reason: str, code: int):
        super().__init__(reason)
        self.reason, self.code = reason, code
