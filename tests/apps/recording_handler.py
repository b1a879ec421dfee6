"""A logging handler for the Python logging config tests: each record it receives is
one JSON line in the file it is given (the test reads them from another process),
with the attributes a team's handler would read: name, level, msg, args, message."""

import json
import logging


class Recording(logging.Handler):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        entry = {
            "name": record.name,
            "levelno": record.levelno,
            "levelname": record.levelname,
            "msg": str(record.msg),
            "args_type": type(args).__name__,
            "args": {k: v if isinstance(v, (int, str, type(None))) else repr(v) for k, v in args.items()}
            if isinstance(args, dict) else [repr(a) for a in args or ()],
            "message": record.getMessage(),
            "process": record.process,
        }
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


class Gated(Recording):
    """A handler that is stuck until the test lets it go: the first request line it
    gets (the debug line a worker logs for each request) waits until the test writes
    to the FIFO ``gate``. Meanwhile the worker's records pile up in the queue."""

    def __init__(self, path: str, gate: str):
        super().__init__(path)
        self.gate = gate
        self.waited = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.waited and record.getMessage().startswith("GET "):
            self.waited = True
            with open(self.gate, "rb") as gate:
                gate.read(1)
        super().emit(record)
