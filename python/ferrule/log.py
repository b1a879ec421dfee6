"""Logging on the Python side, all of it through ferrule's error log (gunicorn's line
format, and a failing sink costs lost lines, never an exception):

* ``Log``: the logger handed to hooks as ``server.log`` and ``worker.log``, with the
  methods of gunicorn's ``Logger`` that hooks use.
* ``install(level)``: Python logging's ``gunicorn.error`` and ``ferrule.error`` get a
  handler writing to the error log, at ``--log-level``, so the usual Flask recipe
  (``app.logger.handlers = logging.getLogger("gunicorn.error").handlers``) sends an
  app's log lines there; ``gunicorn.access`` and ``ferrule.access`` write whole lines
  to the access log of a worker that has one.
* ``flush_std()``: flushes ``sys.stdout`` and ``sys.stderr`` without raising when they
  lead nowhere (a closed pipe, a full disk).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import traceback

from ferrule import _ferrule

#: Python logging levels as the error log names them.
_LEVELS = ((logging.CRITICAL, "critical"), (logging.ERROR, "error"), (logging.WARNING, "warning"),
           (logging.INFO, "info"))

ERROR_LOGGERS = ("gunicorn.error", "ferrule.error")
ACCESS_LOGGERS = ("gunicorn.access", "ferrule.access")


def _level_name(levelno: int) -> str:
    for number, name in _LEVELS:
        if levelno >= number:
            return name
    return "debug"


def _level_number(level) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(str(level).upper())
    return number if isinstance(number, int) else logging.INFO


class Log:
    """gunicorn's ``Logger`` surface for hooks: ``debug`` .. ``critical``, ``exception``,
    ``log(level, msg)`` and ``reopen_files``; ``error_log`` and ``access_log`` are the
    Python loggers. ``msg % args`` as in logging; ``exc_info=True`` adds the traceback."""

    def __init__(self):
        self.error_log = logging.getLogger("gunicorn.error")
        self.access_log = logging.getLogger("gunicorn.access")

    def _emit(self, level: str, msg, args: tuple, exc_info=None) -> None:
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args!r}"
        if exc_info:
            text = f"{text}\n{traceback.format_exc().rstrip()}"
        _ferrule.log_message(level, text.rstrip("\n"))

    def debug(self, msg, *args, **kwargs) -> None:
        self._emit("debug", msg, args, kwargs.get("exc_info"))

    def info(self, msg, *args, **kwargs) -> None:
        self._emit("info", msg, args, kwargs.get("exc_info"))

    def warning(self, msg, *args, **kwargs) -> None:
        self._emit("warning", msg, args, kwargs.get("exc_info"))

    warn = warning

    def error(self, msg, *args, **kwargs) -> None:
        self._emit("error", msg, args, kwargs.get("exc_info"))

    def critical(self, msg, *args, **kwargs) -> None:
        self._emit("critical", msg, args, kwargs.get("exc_info"))

    def exception(self, msg, *args, **kwargs) -> None:
        self._emit("error", msg, args, kwargs.get("exc_info", True))

    def log(self, level, msg, *args, **kwargs) -> None:
        self._emit(_level_name(_level_number(level)), msg, args, kwargs.get("exc_info"))

    def reopen_files(self) -> None:
        _ferrule.reopen_logs()


class ErrorLogHandler(logging.Handler):
    """Writes each record to ferrule's error log at the record's level; the line gets
    the error log's prefix (time, pid, level), the record its message and traceback."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        _ferrule.log_message(_level_name(record.levelno), text)


class AccessLogHandler(logging.Handler):
    """Writes each record's message as a whole line to the access log of this process
    (a worker serving with ``--access-logfile``); dropped where there is none."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        _ferrule.access_message(text)


def _attach(name: str, handler_type: type, level: int) -> None:
    logger = logging.getLogger(name)
    if not any(type(h) is handler_type for h in logger.handlers):
        logger.addHandler(handler_type())
    logger.setLevel(level)
    # gunicorn's loggers do not propagate: a root handler would print each line twice.
    logger.propagate = False


def install(level: str) -> None:
    """Points gunicorn's and ferrule's Python loggers at the error and access logs, at
    ``level`` (``--log-level``; the access loggers are at INFO, as gunicorn's). Safe to
    call again (a reload): handlers are not added twice, the level changes, in Python
    and in the Rust error log."""
    number = _level_number(level)
    for name in ERROR_LOGGERS:
        _attach(name, ErrorLogHandler, number)
    for name in ACCESS_LOGGERS:
        _attach(name, AccessLogHandler, logging.INFO)
    _ferrule.set_log_level(_level_name(number))
    if not getattr(install, "_exit_hook", False):
        install._exit_hook = True
        # Runs before the interpreter's own flush of stdout, which would exit 120 on a
        # closed pipe.
        atexit.register(flush_std)


def _discard(stream) -> None:
    """Points the stream's descriptor at /dev/null, so what it still buffers (and the
    interpreter's flush at exit) goes nowhere instead of failing again."""
    try:
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
        stream.flush()
    except (OSError, ValueError, AttributeError):
        pass


def flush_std() -> None:
    """Flushes ``sys.stdout`` and ``sys.stderr``; one that cannot be written any more
    (EPIPE, ENOSPC, EIO, closed) is discarded instead of raising. For a process about
    to exit: the descriptor then leads to /dev/null."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            _discard(stream)


def print_stderr(text: str) -> None:
    """``print(text, file=sys.stderr)`` on the way out (the CLI's one-line errors, an
    app's import traceback): a closed stderr cannot turn it into an exception or the
    exit status into 120."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        _discard(sys.stderr)
    except AttributeError:  # no stderr at all
        pass
