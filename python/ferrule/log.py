"""The logger handed to hooks (``server.log``, ``worker.log``): gunicorn's method
names, writing through ferrule's error log."""

from __future__ import annotations

import traceback

from ferrule import _ferrule


class Log:
    def _emit(self, level: str, msg: str, args: tuple) -> None:
        text = str(msg) % args if args else str(msg)
        _ferrule.log_message(level, text.rstrip("\n"))

    def debug(self, msg, *args) -> None:
        self._emit("debug", msg, args)

    def info(self, msg, *args) -> None:
        self._emit("info", msg, args)

    def warning(self, msg, *args) -> None:
        self._emit("warning", msg, args)

    warn = warning

    def error(self, msg, *args) -> None:
        self._emit("error", msg, args)

    def critical(self, msg, *args) -> None:
        self._emit("critical", msg, args)

    def exception(self, msg, *args) -> None:
        self._emit("error", f"{msg}\n{traceback.format_exc()}", args)

    def reopen_files(self) -> None:
        _ferrule.reopen_logs()
