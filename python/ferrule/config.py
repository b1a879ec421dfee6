"""Configuration files (``gunicorn.conf.py`` style), command-line arguments from the
environment, and the server hooks, all checked once into a :class:`Settings`.

Precedence, lowest first, as in gunicorn: defaults, the config file,
``FERRULE_CMD_ARGS`` (or ``GUNICORN_CMD_ARGS``), the command line.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import runpy
import typing
from typing import Any, Callable, Dict, Optional

from ferrule.settings import Settings

#: Files read when no ``-c`` is given, first found wins.
DEFAULT_CONFIG_FILES = ("ferrule.conf.py", "gunicorn.conf.py")

#: Server hooks: gunicorn's names, and how many positional arguments each receives.
HOOKS: Dict[str, int] = {
    "on_starting": 1,  # (server)
    "on_reload": 1,  # (server)
    "pre_exec": 1,  # (server), in the child that becomes the new master on USR2
    "when_ready": 1,  # (server)
    "pre_fork": 2,  # (server, worker)
    "post_fork": 2,  # (server, worker)
    "post_worker_init": 1,  # (worker)
    "worker_int": 1,  # (worker)
    "worker_abort": 1,  # (worker)
    "pre_request": 2,  # (worker, req)
    "post_request": 4,  # (worker, req, environ, resp)
    "child_exit": 2,  # (server, worker)
    "worker_exit": 2,  # (server, worker)
    "nworkers_changed": 3,  # (server, new_value, old_value)
    "on_exit": 1,  # (server)
}

#: gunicorn config-file names that differ from ferrule's field names.
ALIASES = {
    "accesslog": "access_logfile",
    "errorlog": "error_logfile",
    "loglevel": "log_level",
    "access_log_format": "access_logformat",
    "keepalive": "keep_alive",
    "preload": "preload_app",
    "pid": "pidfile",
    "raw_env": "env",
    "wsgi_app": "app",
}

#: Accepted in a config file for compatibility and ignored, with the reason logged.
IGNORED = {
    "worker_class": "ferrule has one worker type (threads started on demand)",
    "worker_connections": "ferrule does not cap connections per worker",
    "proc_name": "process titles are not set",
    "capture_output": "the app's stdout and stderr go where ferrule's go",
}


class ConfigFileError(Exception):
    """A config file or setting value ferrule cannot use; the message names it."""


def _hint(tp: Any) -> Any:
    """The plain type of a dataclass field (``Optional[str]`` -> str)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


_TYPES = {f.name: _hint(t) for f, t in ((f, typing.get_type_hints(Settings)[f.name])
                                         for f in dataclasses.fields(Settings))}


def coerce(name: str, value: Any) -> Any:
    """Checks a setting's value from a config file and returns it in its field's type."""
    tp = _TYPES[name]
    bad = f"setting {name!r}"
    if value is None and name in ("access_logfile", "error_logfile", "pidfile", "user", "group", "app"):
        return None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigFileError(f"{bad} must be True or False (got {value!r})")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigFileError(f"{bad} must be an integer (got {value!r})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigFileError(f"{bad} must be a number of seconds >= 0 (got {value!r})")
        return float(value)
    if tp is str:
        if name in ("user", "group") and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ConfigFileError(f"{bad} must be a string (got {value!r})")
        return value
    if typing.get_origin(tp) in (list, typing.List):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigFileError(f"{bad} must be a string or a list of strings (got {value!r})")
        return list(value)
    return value


def check_hook(name: str, value: Any) -> Callable:
    if not callable(value):
        raise ConfigFileError(f"hook {name!r} must be callable (got {value!r})")
    try:
        inspect.signature(value).bind(*range(HOOKS[name]))
    except TypeError:
        raise ConfigFileError(f"hook {name!r} must accept {HOOKS[name]} positional argument(s)") from None
    except ValueError:  # builtins without a signature: trust them
        pass
    return value


def find_config_file(explicit: Optional[str]) -> Optional[str]:
    if explicit:
        path = explicit[len("python:"):] if explicit.startswith("python:") else explicit
        if not os.path.exists(path):
            raise ConfigFileError(f"config file {explicit!r} does not exist")
        return path
    for name in DEFAULT_CONFIG_FILES:
        if os.path.exists(name):
            return name
    return None


def read_config_file(path: str) -> tuple[Dict[str, Any], Dict[str, Callable], list[str]]:
    """Runs the file and returns (settings, hooks, notes). Names that are not settings
    or hooks (imports, helpers) are left alone, as gunicorn does."""
    try:
        namespace = runpy.run_path(path, run_name="__config__")
    except Exception as exc:
        raise ConfigFileError(f"config file {path!r} failed: {type(exc).__name__}: {exc}") from None
    values: Dict[str, Any] = {}
    hooks: Dict[str, Callable] = {}
    notes: list[str] = []
    for key, value in namespace.items():
        if key.startswith("_"):
            continue
        if key in HOOKS:
            hooks[key] = check_hook(key, value)
        elif key in IGNORED:
            notes.append(f"config file {path}: {key} ignored: {IGNORED[key]}")
        else:
            name = ALIASES.get(key, key)
            if name in _TYPES:
                values[name] = coerce(name, value)
    return values, hooks, notes


def apply(settings: Settings, values: Dict[str, Any]) -> Settings:
    return dataclasses.replace(settings, **values)
