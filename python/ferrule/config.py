"""Configuration files (``gunicorn.conf.py`` style), command-line arguments from the
environment, and the server hooks, all checked once into a :class:`Settings`.

Precedence, lowest first, as in gunicorn: defaults, the config file,
``FERRULE_CMD_ARGS`` (or ``GUNICORN_CMD_ARGS``), the command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import inspect
import os
import runpy
import sys
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple

from ferrule import gunicorn as g
from ferrule.settings import Settings
from ferrule.validators import json_dict, optional_path

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
    "post_request": 4,  # (worker, req, environ, resp); 2 or 3 are adapted, as gunicorn does
    "child_exit": 2,  # (server, worker)
    "worker_exit": 2,  # (server, worker)
    "nworkers_changed": 3,  # (server, new_value, old_value)
    "on_exit": 1,  # (server)
}

#: Other names ferrule has accepted for its settings (gunicorn's names are in gunicorn.SPECS).
ALIASES = {
    "preload": "preload_app",
    "pid": "pidfile",
}

class ConfigFileError(Exception):
    """A config file or setting value ferrule cannot use; the message names it."""


def _hint(tp: Any) -> Any:
    """The plain type of a dataclass field (``Optional[str]`` -> str)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


_TYPES = {f.name: _hint(t) for f, t in ((f, typing.get_type_hints(Settings)[f.name])
                                         for f in dataclasses.fields(Settings)) if f.name != "extra"}
_OPTIONAL = ("access_logfile", "error_logfile", "pidfile", "user", "group", "app", "chdir", "pythonpath",
             "certfile", "keyfile", "ca_certs", "ciphers", "metrics_bind", "statsd_host", "egress_log",
             "syslog_prefix")


#: The longest wait any timeout can name: what the core's Duration holds (u64 seconds).
#: The core treats anything past about a century as never; larger is a typo.
MAX_SECONDS = 2**64 - 1
#: umask(2) keeps the permission bits only.
MAX_UMASK = 0o777


def umask(value: Any) -> int:
    """gunicorn's auto_int: "022" is octal, like "0o22"; 0 to 0o777."""
    if isinstance(value, str) and len(value.strip()) > 1 and value.strip().isdigit() \
            and value.strip().startswith("0"):
        value = "0o" + value.strip()[1:]
    mask = g.pos_int(value)
    if mask > MAX_UMASK:
        raise g.BadValue(f"must be an octal umask from 0 to 0o777, like 022 (got {value!r})")
    return mask


def seconds(value: Any) -> float:
    """gunicorn's seconds (finite, >= 0: NaN and infinities are refused there), at most
    MAX_SECONDS. Every timeout, also those only Python reads (``timeout``)."""
    result = g.seconds(value)
    if result > MAX_SECONDS:
        raise g.BadValue(f"must be a number of seconds >= 0, at most {MAX_SECONDS} (got {value!r})")
    return result


def _user(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise g.BadValue(f"must be a name or a numeric id (got {value!r})")


def on_off(value: Any) -> bool:
    """nginx's on/off, or a boolean (True, "true", "off"...)."""
    if isinstance(value, str) and value.strip().lower() in ("on", "off"):
        return value.strip().lower() == "on"
    try:
        result = g.boolean(value)
    except g.BadValue:
        result = None
    if result is None:
        raise g.BadValue(f"must be on or off (got {value!r})")
    return result


_SPECIAL: Dict[str, Callable[[Any], Any]] = {
    "request_buffering": on_off,
    "umask": umask,
    "user": _user,
    "group": _user,
    "forwarded_allow_ips": g.addr_list,
    "proxy_protocol": g.proxy_protocol,
    "proxy_allow_ips": g.addr_list,
    "secure_scheme_headers": g.scheme_headers,
    "forwarded_remote_addr": g.one_of("off", "x-forwarded-for", "forwarded"),
    "protocol": g.one_of("http", "uwsgi"),
    "uwsgi_allow_ips": g.addr_list,
    "cert_reqs": g.cert_reqs,
    "server_timing": g.server_timing,
    "bind": g.string_list,
    "header_map": g.one_of("drop", "refuse", "dangerous"),
    "log_level": g.one_of("debug", "info", "warning", "warn", "error", "critical"),
    "log_config": optional_path,
    "log_config_json": optional_path,
    "log_config_dict": json_dict,
}


def coerce(name: str, value: Any, label: Optional[str] = None) -> Any:
    """Checks a setting's value as gunicorn's validators do ("4" is 4, "true" is True)
    and returns it in its field's type; BadValue becomes one line naming the setting."""
    label = label or f"setting {name!r}"
    try:
        return _coerce(name, value)
    except g.BadValue as exc:
        raise ConfigFileError(f"{label} {exc}") from None


def _coerce(name: str, value: Any) -> Any:
    if name in _SPECIAL:
        return _SPECIAL[name](value)
    tp = _TYPES[name]
    if value is None and name in _OPTIONAL:
        return None
    if tp is bool:
        if value is None:
            raise g.BadValue("must be True or False (got None)")
        return g.boolean(value)
    if tp is int:
        return g.pos_int(value)
    if tp is float:
        return seconds(value)
    if tp is str:
        text = g.string(value)
        if text is None:
            raise g.BadValue("must be a string (got None)")
        return text
    if typing.get_origin(tp) in (list, typing.List):
        return g.string_list(value)
    return value


def _import_hook(name: str, value: str) -> Callable:
    """gunicorn accepts a hook as a dotted path, "package.module.function"."""
    mod_name, _, attr = value.rpartition(".")
    try:
        return getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigFileError(f"hook {name!r}: cannot import {value!r} ({exc})") from None


def check_hook(name: str, value: Any) -> Callable:
    arity = HOOKS[name] if name in HOOKS else g.INERT_HOOKS[name][0]
    if isinstance(value, str):
        value = _import_hook(name, value)
    if not callable(value):
        raise ConfigFileError(f"hook {name!r} must be callable (got {value!r})")
    accepted = [n for n in range(arity, 0, -1) if _binds(value, n)] if name == "post_request" else \
        ([arity] if _binds(value, arity) else [])
    if not accepted:
        raise ConfigFileError(f"hook {name!r} must accept {arity} positional argument(s)")
    if accepted[0] < arity:  # post_request(worker, req[, environ]): gunicorn passes what it takes
        short, n = value, accepted[0]
        return functools.wraps(short)(lambda *args: short(*args[:n]))
    return value


def _binds(fn: Callable, n: int) -> bool:
    try:
        inspect.signature(fn).bind(*range(n))
    except TypeError:
        return False
    except ValueError:  # builtins without a signature: trust them
        pass
    return True


def find_config_file(explicit: Optional[str], base: str = "") -> Optional[str]:
    """-c FILE, -c file:FILE or -c python:MODULE (returned as is), else a default file.
    Relative paths are taken from ``base`` (default: the current directory); a HUP
    passes the directory ferrule started in, which --chdir has left."""
    if explicit:
        if explicit.startswith("python:"):
            return explicit
        path = os.path.join(base, explicit[len("file:"):] if explicit.startswith("file:") else explicit)
        if not os.path.exists(path):
            raise ConfigFileError(f"config file {explicit!r} does not exist")
        return path
    for name in DEFAULT_CONFIG_FILES:
        if os.path.exists(os.path.join(base, name)):
            return os.path.join(base, name)
    return None


def _run_config(path: str) -> Dict[str, Any]:
    try:
        if path.startswith("python:"):
            name = path[len("python:"):]
            if name in sys.modules:  # HUP: read the module again, as a file would be
                return vars(importlib.reload(sys.modules[name]))
            return vars(importlib.import_module(name))
        return runpy.run_path(path, run_name="__config__")
    except Exception as exc:
        raise ConfigFileError(f"config file {path!r} failed: {type(exc).__name__}: {exc}") from None


def read_config_file(path: str) -> Tuple[Dict[str, Any], Dict[str, Callable], List[str]]:
    """Runs the file (or imports ``python:MODULE``) and returns (settings, hooks, notes).
    Names that are not settings or hooks (imports, helpers) are left alone, as gunicorn does."""
    values: Dict[str, Any] = {}
    hooks: Dict[str, Callable] = {}
    notes: List[str] = []
    for key, value in _run_config(path).items():
        if key.startswith("_"):
            continue
        if key in HOOKS:
            hooks[key] = check_hook(key, value)
        elif key in g.INERT_HOOKS:
            check_hook(key, value)
            notes.append(f"config file {path}: hook {key} accepted but never called: {g.INERT_HOOKS[key][1]}")
        elif key in g.BY_NAME or key in ALIASES or key in _TYPES:
            values[key] = value
        elif (guess := _misspelt(key, value)) is not None:
            notes.append(f"config file {path}: {key!r} is not a setting, ignored as gunicorn does "
                         f"(did you mean {guess!r}?)")
    fields, notes_too = resolve(values, f"config file {path}:", cli=False)
    return fields, hooks, notes + notes_too


def _misspelt(key: str, value: Any) -> Optional[str]:
    """The setting a value's name, or the hook a function's name, is a likely typo of
    (``wrokers``, ``def when_redy``), else None. Helpers stay quiet: imports, classes
    and names far from any setting (``graceful_timeout_str``, ``port``)."""
    if inspect.ismodule(value) or inspect.isclass(value):
        return None
    names = HOOKS if inspect.isfunction(value) else g.BY_NAME
    known = [n for n in names if abs(len(n) - len(key)) <= 2]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.85)
    return close[0] if close else None


def _label(key: str, spec: Optional[g.Spec], where: str, cli: bool) -> str:
    """How an error names the setting: its flag on a command line (ferrule's own
    flags are the field's name, dashed), else its name."""
    if cli and spec is not None and spec.flags:
        flag = next((f for f in spec.flags if f.startswith("--")), spec.flags[0])
        return f"{where} {flag}".strip()
    if cli and spec is None and key in _TYPES:
        return f"{where} --{key.replace('_', '-')}".strip()
    return f"{where} setting {key!r}".strip()


def resolve(values: Dict[str, Any], where: str, cli: bool) -> Tuple[Dict[str, Any], List[str]]:
    """Turns gunicorn's (and ferrule's) names and values into Settings fields; the
    gunicorn settings ferrule has no field for go into ``extra``. Returns (fields,
    notes to log); raises ConfigFileError for a value ferrule would have to drop."""
    fields: Dict[str, Any] = {}
    extra: Dict[str, Any] = {}
    notes: List[str] = []
    for key, value in values.items():
        spec = g.BY_NAME.get(key)
        label = _label(key, spec, where, cli)
        if spec is None or spec.status == g.IMPLEMENTED:
            name = (spec.field or key) if spec else ALIASES.get(key, key)
            if name in _TYPES:
                fields[name] = coerce(name, value, label)
        elif spec.status != g.COMMAND:
            try:
                extra[key], note = g.judge(spec, value)
            except g.BadValue as exc:
                raise ConfigFileError(f"{label}: {exc}") from None
            if note:
                notes.append(f"{where} {note}" if where else note)
    if extra:
        fields["extra"] = extra
    return fields, notes


def apply(settings: Settings, values: Dict[str, Any]) -> Settings:
    extra = values.pop("extra", None)
    if extra:
        values["extra"] = {**settings.extra, **extra}
    return dataclasses.replace(settings, **values)
