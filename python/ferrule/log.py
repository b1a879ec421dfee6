"""Logging on the Python side, all of it through ferrule's error log (gunicorn's line
format, and a failing sink costs lost lines, never an exception):

* ``Log``: the logger handed to hooks as ``server.log`` and ``worker.log``, with the
  methods of gunicorn's ``Logger`` that hooks use.
* ``install(level)``: Python logging's ``gunicorn.error`` and ``ferrule.error`` get a
  handler writing to the error log, at ``--log-level``, so the usual Flask recipe
  (``app.logger.handlers = logging.getLogger("gunicorn.error").handlers``) sends an
  app's log lines there; ``gunicorn.access`` and ``ferrule.access`` write whole lines
  to the access log of a worker that has one.
* ``protect_std_streams()``: ``sys.stdout`` and ``sys.stderr`` (what apps and hooks
  ``print`` to) drop what cannot be written instead of raising, count the lines lost
  and say so in the error log once writing works again.
* ``flush_std()``: flushes ``sys.stdout`` and ``sys.stderr`` without raising when they
  lead nowhere (a closed pipe, a full disk).
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import signal
import sys
import threading
import time
import traceback

from ferrule import _ferrule

#: Python logging levels as the error log names them.
_LEVELS = ((logging.CRITICAL, "critical"), (logging.ERROR, "error"), (logging.WARNING, "warning"),
           (logging.INFO, "info"))

ERROR_LOGGERS = ("gunicorn.error", "ferrule.error")
ACCESS_LOGGERS = ("gunicorn.access", "ferrule.access")

#: The Python logger ``Log`` writes to when a Python logging configuration is given
#: (``ferrule.logconfig``); None: the error log.
_python_error_log = None


def to_python(logger) -> None:
    """``Log``'s lines go to ``logger`` (a Python logging configuration's
    ``gunicorn.error``) as records; None: to the error log again."""
    global _python_error_log
    _python_error_log = logger


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


def _traceback(exc_info) -> str:
    """The traceback for logging's ``exc_info``: True (the exception being handled), an
    exception, or a ``sys.exc_info()`` tuple."""
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple) or len(exc_info) != 3:
        exc_info = sys.exc_info()
    return "".join(traceback.format_exception(*exc_info)).rstrip()


class Log:
    """gunicorn's ``Logger`` surface for hooks: ``debug`` .. ``critical``, ``exception``,
    ``log(level, msg)`` and ``reopen_files``; ``error_log`` and ``access_log`` are the
    Python loggers. ``msg % args`` as in logging; ``exc_info=True`` adds the traceback."""

    def __init__(self):
        self.error_log = logging.getLogger("gunicorn.error")
        self.access_log = logging.getLogger("gunicorn.access")

    def _emit(self, level: str, msg, args: tuple, exc_info=None) -> None:
        if _python_error_log is not None:
            number = logging.ERROR if level == "exception" else _level_number(level)
            if _python_error_log.isEnabledFor(number):
                _ferrule.count_log(level)  # statsd's log.*, as the error log's lines count
                _python_error_log.log(number, msg, *args, exc_info=exc_info)
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args!r}"
        if exc_info:
            text = f"{text}\n{_traceback(exc_info)}"
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
        self._emit("exception", msg, args, kwargs.get("exc_info", True))

    def log(self, level, msg, *args, **kwargs) -> None:
        self._emit(_level_name(_level_number(level)), msg, args, kwargs.get("exc_info"))

    def reopen_files(self) -> None:
        _ferrule.reopen_logs()


class ErrorLogHandler(logging.Handler):
    """Writes each record to ferrule's error log at the record's level; the line gets
    the error log's prefix (time, pid, level), the record its message and traceback.
    With a Python logging config (which sends the error log's lines to Python) the
    line is written as it is, never sent round to Python again."""

    def emit(self, record: logging.LogRecord) -> None:
        write = _ferrule.log_message if _python_error_log is None else _ferrule.error_line
        try:
            write(_level_name(record.levelno), self.format(record))
        except Exception:  # logging's contract: a handler never raises into the caller
            self.handleError(record)


class AccessLogHandler(logging.Handler):
    """Writes each record's message as a whole line to the access log of this process
    (a worker serving with ``--access-logfile``); dropped where there is none."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _ferrule.access_message(self.format(record))
        except Exception:
            self.handleError(record)


def _attach(name: str, handler_type: type, level: int) -> None:
    logger = logging.getLogger(name)
    if not any(type(h) is handler_type for h in logger.handlers):
        logger.addHandler(handler_type())
    logger.setLevel(level)
    # gunicorn's loggers do not propagate: a root handler would print each line twice.
    logger.propagate = False


def attach_handlers(level) -> None:
    """Points gunicorn's and ferrule's Python loggers at the error and access logs, at
    ``level`` (the access loggers at INFO, as gunicorn's); handlers are never added
    twice."""
    for name in ERROR_LOGGERS:
        _attach(name, ErrorLogHandler, _level_number(level))
    for name in ACCESS_LOGGERS:
        _attach(name, AccessLogHandler, logging.INFO)


def install(level: str) -> None:
    """Sets the process up once its error log exists: the Python loggers at ``level``
    (``--log-level``), the Rust error log's level, ``sys.stdout``/``sys.stderr`` that
    drop instead of raising, and a last flush at exit that cannot fail. Safe to call
    again (a reload with a new level)."""
    attach_handlers(level)
    _ferrule.set_log_level(_level_name(_level_number(level)))
    protect_std_streams()
    try:
        # Python ignores SIGPIPE; a program that restored the default before calling
        # ferrule.run would otherwise die on its first write to a closed log pipe.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass
    flush_at_exit()


def flush_at_exit() -> None:
    """Registers :func:`flush_std` to run at exit, once: before the interpreter's own
    flush of stdout, which would exit 120 on a closed pipe."""
    if not getattr(flush_at_exit, "_registered", False):
        flush_at_exit._registered = True
        atexit.register(flush_std)


class _TolerantFile(io.FileIO):
    """The descriptor under ``sys.stdout`` or ``sys.stderr``: a write that fails (EPIPE
    from a closed pipe, ENOSPC, EIO, EAGAIN) is dropped and its lines counted, as the
    Rust sinks do, so a ``print`` never raises and nothing is retried. The first write
    that gets through again is followed by a warning in the error log."""

    def __init__(self, fd: int, name: str):
        super().__init__(fd, "w", closefd=False)
        self._label = name
        self._lock = threading.Lock()
        #: Whether anything was lost, and the newlines in what was (a partial line is
        #: reported as one).
        self._losing = False
        self._lines = 0
        self._since = 0.0
        self._reason = ""
        self._pid = 0

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        try:
            written = super().write(data)
            failure = None if written is not None else "Resource temporarily unavailable (os error 11)"
        except OSError as exc:
            written, failure = None, f"{exc.strerror} (os error {exc.errno})" if exc.errno else str(exc)
        if failure is not None:
            self._count(bytes(data).count(b"\n"), failure)
            return size
        if self._losing:
            self._report()
        return written

    def _count(self, lines: int, reason: str) -> None:
        with self._lock:
            if not self._losing or self._pid != os.getpid():
                self._since, self._reason, self._pid, self._lines = time.time(), reason, os.getpid(), 0
                self._losing = True
            self._lines += lines

    def _report(self) -> None:
        with self._lock:
            if not self._losing:
                return
            self._losing = False
            if self._pid != os.getpid():  # a parent's count: it reports those lines
                return
            lost = max(self._lines, 1)
            since = time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime(self._since))
        plural = "" if lost == 1 else "s"
        _ferrule.log_message("warning", f"{lost} {self._label} line{plural} lost since {since}: {self._reason}")


def _protect(stream, name: str):
    """A copy of ``stream`` (same descriptor, encoding, buffering) over a
    :class:`_TolerantFile`; ``stream`` itself when it is not a plain file stream
    (pytest's capture, a StringIO, an already protected one)."""
    if type(stream) is not io.TextIOWrapper:
        return stream
    if isinstance(getattr(stream.buffer, "raw", stream.buffer), _TolerantFile):
        return stream
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # closed, or no descriptor
        return stream
    try:
        stream.flush()
    except (OSError, ValueError):
        pass  # what it holds stays with it; the copy starts empty
    raw = _TolerantFile(fd, name)
    raw.name = getattr(stream, "name", fd)  # "<stdout>", as before
    buffered = isinstance(stream.buffer, io.BufferedWriter)
    return io.TextIOWrapper(io.BufferedWriter(raw) if buffered else raw, encoding=stream.encoding,
                            errors=stream.errors, newline="\n", line_buffering=stream.line_buffering,
                            write_through=stream.write_through or not buffered)


def protect_std_streams() -> None:
    """Makes ``sys.stdout`` and ``sys.stderr`` drop (and count) what cannot be written
    instead of raising in the app, a hook or the interpreter's flush at exit."""
    sys.stdout = _protect(sys.stdout, "stdout")
    sys.stderr = _protect(sys.stderr, "stderr")


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
    _print(text, "stderr")


def print_stdout(text: str) -> None:
    """``print(text)`` for a command's answer (``--print-config``): a reader that is
    gone (``| head -1``) ends the output, not the command with a traceback."""
    _print(text, "stdout")


def _print(text: str, name: str) -> None:
    stream = getattr(sys, name)
    if stream is None:  # no such stream at all
        return
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):
        _discard(stream)
