"""gunicorn's Python logging configuration: ``--log-config FILE`` (``fileConfig``),
``logconfig_dict`` / ``--log-config-dict JSON`` and ``--log-config-json FILE``
(``dictConfig`` over gunicorn's ``CONFIG_DEFAULTS``), applied in gunicorn's order
(dict, then JSON, then file) once ferrule's own handlers are on the loggers, as
gunicorn's ``Logger.setup`` does.

With one of them, ferrule's records go to Python logging instead of its Rust logs:

* error records to ``gunicorn.error`` at their level: the lines the Rust side logs
  pass through a bounded queue that a thread of each process drains (those threads
  never wait for Python; a full queue drops records and the drain thread says how
  many); the master's and the hooks' lines (``server.log``) are logged directly;
* access records to ``gunicorn.access`` as ``info(access_log_format, atoms)``, on the
  thread that ran the request after its response was sent, so ``record.args`` is the
  atoms dict with gunicorn's keys (``SafeAtoms``).

``ferrule.error`` and ``ferrule.access`` are aliases: a configuration that names them
and not the ``gunicorn.*`` logger gets ferrule's records on them; otherwise a record
logged on ``ferrule.*`` is handled by the ``gunicorn.*`` logger's handlers.
"""

from __future__ import annotations

import atexit
import configparser
import copy
import json
import logging
import logging.config
import os
import threading
from typing import Any, Dict, Optional, Tuple

from ferrule import _ferrule

#: gunicorn's ``glogging.CONFIG_DEFAULTS``: what a dict or JSON configuration is merged
#: over (key by key at the top level, as gunicorn's ``dict.update``).
CONFIG_DEFAULTS: Dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": True,
                           "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": True,
                            "qualname": "gunicorn.access"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"},
    },
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                    "datefmt": "[%Y-%m-%d %H:%M:%S %z]", "class": "logging.Formatter"},
    },
}

ALIASES = (("gunicorn.error", "ferrule.error"), ("gunicorn.access", "ferrule.access"))


class LogConfigError(Exception):
    """A configuration that cannot be applied; ``unreadable``: a file that cannot be read."""

    def __init__(self, message: str, unreadable: bool = False):
        super().__init__(message)
        self.unreadable = unreadable


class SafeAtoms(dict):
    """gunicorn's atoms dict (``record.args`` of an access record): ``{Name}i`` read in
    any case, ``-`` for an atom that is not there. Rust fills it with the quotes of text
    values already escaped, as gunicorn's does."""

    def __getitem__(self, k):
        if k.startswith("{"):
            k = k.lower()
        return super().__getitem__(k) if k in self else "-"


def wanted(cfg) -> bool:
    return bool(cfg.log_config_dict or cfg.log_config_json or cfg.log_config)


def _read(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise LogConfigError(f"{what} {path!r} not found", unreadable=True) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LogConfigError(f"{what} {path!r} cannot be read: {exc}", unreadable=True) from None


def _dict_config(given: dict, what: str) -> set:
    config = copy.deepcopy(CONFIG_DEFAULTS)
    config.update(given)
    try:
        logging.config.dictConfig(config)
    except (AttributeError, ImportError, ValueError, TypeError, KeyError) as exc:
        # dictConfig's "Unable to configure handler 'h'" keeps the reason as its cause.
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        raise LogConfigError(f"{what}: {exc}{cause}") from None
    return set(config.get("loggers") or ())


def _file_loggers(path: str, text: str) -> set:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, path)
        keys = [k.strip() for k in parser.get("loggers", "keys", fallback="").split(",") if k.strip()]
    except configparser.Error:
        return set()
    return {parser.get(f"logger_{k}", "qualname", fallback=k) for k in keys if k != "root"}


def apply(cfg) -> Optional[Tuple[str, str]]:
    """Applies the configuration ``cfg`` names, if any, and returns the (error,
    access) logger names ferrule's records go to; None when there is none. Raises
    :class:`LogConfigError` naming the problem."""
    given = cfg.log_config_dict or cfg.log_config_json or cfg.log_config
    if given and str(cfg.access_logformat).startswith("json"):
        # The records' msg would be the literal "json...": refuse rather than log that.
        raise LogConfigError("access-logformat json is ferrule's own access line; with a Python logging "
                             "config, give gunicorn.access a JSON formatter (record.args holds every atom)")
    if cfg.log_config_dict:
        named = _dict_config(cfg.log_config_dict, "logconfig_dict")
    elif cfg.log_config_json:
        text = _read(cfg.log_config_json, "log-config-json")
        try:
            given = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LogConfigError(f"log-config-json {cfg.log_config_json!r}: not JSON: {exc}") from None
        if not isinstance(given, dict):
            raise LogConfigError(f"log-config-json {cfg.log_config_json!r}: must hold a JSON object")
        named = _dict_config(given, f"log-config-json {cfg.log_config_json!r}")
    elif cfg.log_config:
        text = _read(cfg.log_config, "log-config")
        # gunicorn's defaults: CONFIG_DEFAULTS itself (configparser makes its values text),
        # the file's name and its directory (%(here)s).
        defaults = {**CONFIG_DEFAULTS, "__file__": cfg.log_config, "here": os.path.dirname(cfg.log_config)}
        try:
            logging.config.fileConfig(cfg.log_config, defaults=defaults, disable_existing_loggers=False)
        except (configparser.Error, KeyError, ValueError, TypeError, AttributeError, ImportError,
                RuntimeError, OSError) as exc:
            raise LogConfigError(f"log-config {cfg.log_config!r}: {type(exc).__name__}: {exc}") from None
        named = _file_loggers(cfg.log_config, text)
    else:
        return None
    names = []
    for gunicorn_name, alias in ALIASES:
        if alias in named and gunicorn_name not in named:
            names.append(alias)
            _alias(gunicorn_name, alias)
        else:
            names.append(gunicorn_name)
            if alias not in named:
                _alias(alias, gunicorn_name)
    return names[0], names[1]


class _Alias(logging.Handler):
    """Hands each record to another logger's handlers (``ferrule.error`` →
    ``gunicorn.error``); the record keeps the name it was logged under."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(self.target).handle(record)


def _alias(name: str, target: str) -> None:
    logger = logging.getLogger(name)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.addHandler(_Alias(target))
    logger.setLevel(logging.NOTSET)
    logger.propagate = False
    logger.disabled = False


# Error records from Rust: the drain thread ------------------------------------------

#: How long the drain thread waits for a record before it looks again (GIL released).
DRAIN_WAIT = 0.25

#: ``error``: the logger name error records go to (None: no configuration);
#: ``thread``: this process's drain thread; ``stopping``: it should end (the process is
#: exiting); ``forked_hook``: whether forked processes start their own queue and thread.
_state: Dict[str, Any] = {"error": None, "thread": None, "stopping": False, "forked_hook": False}


def _deliver(records, dropped: int) -> None:
    logger = logging.getLogger(_state["error"])
    for levelno, message in records:
        logger.log(levelno, message)
    if dropped:
        logger.warning("%d error log record(s) dropped: the queue to Python logging was full", dropped)


def _drain() -> None:
    while _state["error"] is not None and not _state["stopping"]:
        try:
            _deliver(*_ferrule.next_error_records(DRAIN_WAIT))
        except Exception:  # a broken handler must not end the thread: logging reports it
            logging.getLogger(__name__).exception("error records: delivering failed")


def drain_now() -> None:
    """Delivers the records still queued (a process about to exit): the drain thread
    is stopped first, so none is left in its hands when the interpreter ends."""
    if _state["error"] is None:
        return
    _state["stopping"] = True
    thread = _state["thread"]
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=DRAIN_WAIT + 5.0)  # bounded: a handler stuck for good is left behind
    while True:
        records, dropped = _ferrule.next_error_records(0.0)
        _deliver(records, dropped)
        if not records:
            return


def _start_errors() -> None:
    if not _ferrule.errors_to_python():
        return
    _state["stopping"] = False
    _state["thread"] = threading.Thread(target=_drain, name="ferrule-error-records", daemon=True)
    _state["thread"].start()


def _after_fork() -> None:
    # The parent's drain thread does not exist here: a queue and a thread of our own.
    if _state["error"] is not None:
        _start_errors()


def _rust_level(logger: logging.Logger) -> str:
    level = logger.getEffectiveLevel()
    for number, name in ((logging.CRITICAL, "critical"), (logging.ERROR, "error"), (logging.WARNING, "warning"),
                         (logging.INFO, "info")):
        if level >= number:
            return name
    return "debug"


def install(cfg) -> bool:
    """Applies ``cfg``'s Python logging configuration, if it has one, and sends
    ferrule's error and access records to its loggers; True when it did. Raises
    :class:`LogConfigError`. Called again on a reload (HUP)."""
    from ferrule import log

    names = apply(cfg)
    if names is None:
        if _state["error"] is not None:  # a reload dropped the configuration
            _state["error"] = None
            _ferrule.errors_to_rust()
            _ferrule.access_to_python(None)
            log.to_python(None)
        return False
    error_name, access_name = names
    error_logger = logging.getLogger(error_name)
    # Rust sends nothing the logger would drop anyway.
    _ferrule.set_log_level(_rust_level(error_logger))
    _ferrule.access_to_python(logging.getLogger(access_name).info, cfg.access_logformat, SafeAtoms)
    log.to_python(error_logger)
    first = _state["error"] is None
    _state["error"] = error_name
    if first:
        _start_errors()
    if not _state["forked_hook"]:
        _state["forked_hook"] = True
        os.register_at_fork(after_in_child=_after_fork)
        atexit.register(drain_now)  # the master's last lines ("Shutting down: Master")
    return True
