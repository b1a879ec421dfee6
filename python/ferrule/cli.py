"""The ``ferrule`` command: gunicorn's flags, names and defaults.

Exit codes: 0 after a signal-initiated stop, 2 for a bad flag or setting value,
3 when an address cannot be bound, 4 when the app cannot be loaded.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import traceback
from typing import List, NoReturn, Tuple

from ferrule import _ferrule, config, log
from ferrule.arbiter import Arbiter, HaltServer, preload
from ferrule.loader import AppLoadError, load_app
from ferrule.settings import Settings

EXIT_USAGE = 2
EXIT_BIND = 3
EXIT_APP_LOAD = 4


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def _umask(text: str) -> int:
    try:
        return int(text, 0) if not text.isdigit() else int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal umask like 022 or 0o022") from None


def build_parser() -> argparse.ArgumentParser:
    """Flags carry no defaults: what was not given is absent, so the config file and
    the CMD_ARGS environment variables can fill it (Settings holds the defaults)."""
    d = Settings()
    p = argparse.ArgumentParser(
        prog="ferrule", argument_default=argparse.SUPPRESS,
        description="Serve a WSGI app. APP is MODULE, MODULE:NAME or MODULE:factory(args).",
    )
    p.add_argument("app", metavar="APP", nargs="?",
                   help="the WSGI app, e.g. myproject.wsgi:application (or wsgi_app in the config file)")
    p.add_argument("-v", "--version", action="version", version=f"ferrule {_ferrule.__version__}")
    c = p.add_argument_group("configuration")
    c.add_argument("-c", "--config", metavar="FILE",
                   help="gunicorn.conf.py-style file (default: ./ferrule.conf.py or ./gunicorn.conf.py if present)")
    c.add_argument("--check-config", action="store_true", help="check the settings and that the app loads, then exit")
    c.add_argument("--print-config", action="store_true", help="print every setting's value, then exit")
    a = p.add_argument_group("server")
    a.add_argument("-b", "--bind", action="append", metavar="ADDRESS",
                   help="HOST:PORT, [::1]:PORT, unix:PATH or fd://N; repeatable "
                        "(default 127.0.0.1:8000, or 0.0.0.0:$PORT)")
    a.add_argument("-w", "--workers", type=int, help="worker processes (default 1, or $WEB_CONCURRENCY)")
    a.add_argument("--threads", type=int, help=f"most threads per worker (default {d.threads})")
    a.add_argument("--backlog", type=int, help=f"listen queue length (default {d.backlog})")
    a.add_argument("--reuse-port", action="store_true", help="set SO_REUSEPORT on TCP listeners")
    a.add_argument("--keep-alive", "--keepalive", dest="keep_alive", type=_positive_float,
                   help=f"seconds to keep an idle connection (default {d.keep_alive:g})")
    a.add_argument("--header-timeout", type=_positive_float,
                   help=f"seconds a client has to send a request head; 408 after (default {d.header_timeout:g})")
    a.add_argument("--io-timeout", type=_positive_float,
                   help=f"seconds a body read or response write may wait (default {d.io_timeout:g})")
    w = p.add_argument_group("workers")
    w.add_argument("-t", "--timeout", type=_positive_float,
                   help=f"seconds a request may run before its worker's stacks are logged and the worker "
                        f"replaced; also the heartbeat limit; 0 = never (default {d.timeout:g})")
    w.add_argument("--graceful-timeout", type=_positive_float,
                   help=f"seconds in-flight requests get on SIGTERM (default {d.graceful_timeout:g})")
    w.add_argument("--max-requests", type=int, help="replace a worker after this many requests (default 0: never)")
    w.add_argument("--max-requests-jitter", type=int, help="add 0..N to --max-requests per worker")
    w.add_argument("--max-worker-memory", type=int, metavar="MB",
                   help="replace a worker whose resident memory exceeds MB (default 0: no limit)")
    w.add_argument("--preload", dest="preload_app", action="store_true",
                   help="import the app in the master before forking (copy-on-write)")
    w.add_argument("--reload", action="store_true", help="replace workers when the app's Python files change")
    w.add_argument("-p", "--pid", dest="pidfile", metavar="FILE", help="write the master's pid here")
    w.add_argument("-u", "--user", help="switch worker processes to this user")
    w.add_argument("-g", "--group", help="switch worker processes to this group")
    w.add_argument("-m", "--umask", type=_umask, help="umask of the server (default 0)")
    h = p.add_argument_group("HTTP parsing (gunicorn's names)")
    h.add_argument("--limit-request-line", type=int)
    h.add_argument("--limit-request-fields", type=int)
    h.add_argument("--limit-request-field_size", "--limit-request-field-size", dest="limit_request_field_size",
                   type=int)
    h.add_argument("--limit-request-body", type=int,
                   help="largest request body in bytes, 413 above; 0 = no limit (default)")
    h.add_argument("--header-map", choices=["drop", "refuse", "dangerous"])
    h.add_argument("--permit-obsolete-folding", action="store_true")
    h.add_argument("--strip-header-spaces", action="store_true")
    h.add_argument("--casefold-http-method", action="store_true")
    h.add_argument("--permit-unconventional-http-method", action="store_true")
    h.add_argument("--forwarded-allow-ips")
    e = p.add_argument_group("environment")
    e.add_argument("--chdir", help="change to this directory before loading the app")
    e.add_argument("--pythonpath", help="comma-separated directories to add to sys.path")
    e.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="set an environment variable")
    lg = p.add_argument_group("logging")
    lg.add_argument("--log-level", choices=["debug", "info", "warning", "error", "critical"])
    lg.add_argument("--error-logfile", "--log-file", dest="error_logfile",
                    help="error log file, '-' for stderr (default)")
    lg.add_argument("--access-logfile", help="access log file, '-' for stdout (default: none)")
    lg.add_argument("--access-logformat")
    return p


def _fail(code: int, message: str) -> NoReturn:
    log.print_stderr(f"ferrule: error: {message}")
    sys.exit(code)


#: Flags that steer this command rather than set a setting.
_COMMAND_FLAGS = ("config", "check_config", "print_config")


def _env_args(parser: argparse.ArgumentParser) -> dict:
    """Settings from FERRULE_CMD_ARGS, or GUNICORN_CMD_ARGS when it is unset."""
    for name in ("FERRULE_CMD_ARGS", "GUNICORN_CMD_ARGS"):
        text = os.environ.get(name)
        if text:
            try:
                return vars(parser.parse_args(shlex.split(text)))
            except SystemExit:
                _fail(EXIT_USAGE, f"{name}: cannot parse {text!r} (see the usage above)")
    return {}


def load_settings(args: dict, env_args: dict) -> Tuple[Settings, dict, List[str]]:
    """Defaults, then the config file, then the environment's args, then the command line."""
    base = Settings()
    if os.environ.get("WEB_CONCURRENCY", "").isdigit():
        base.workers = int(os.environ["WEB_CONCURRENCY"])
    if os.environ.get("PORT"):
        base.bind = [f"0.0.0.0:{os.environ['PORT']}"]
    if os.environ.get("FORWARDED_ALLOW_IPS"):
        base.forwarded_allow_ips = os.environ["FORWARDED_ALLOW_IPS"]
    path = config.find_config_file(args.get("config") or env_args.get("config"))
    hooks: dict = {}
    notes: List[str] = []
    if path:
        values, hooks, notes = config.read_config_file(path)
        base = config.apply(base, values)
    for layer in (env_args, args):
        values = {k: v for k, v in layer.items() if k not in _COMMAND_FLAGS and v is not None}
        base = config.apply(base, values)
    if base.workers < 1:
        raise config.ConfigFileError(f"workers must be an integer >= 1 (got {base.workers})")
    for name in ("max_requests", "max_requests_jitter", "max_worker_memory"):
        if getattr(base, name) < 0:
            raise config.ConfigFileError(f"{name.replace('_', '-')} must be >= 0 (got {getattr(base, name)})")
    return base, hooks, notes


def _prepare_environment(cfg: Settings) -> None:
    for item in cfg.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(EXIT_USAGE, f"--env {item!r}: expected KEY=VALUE")
        os.environ[key] = value
    if cfg.chdir:
        try:
            os.chdir(cfg.chdir)
        except OSError as exc:
            _fail(EXIT_USAGE, f"--chdir {cfg.chdir!r}: {exc.strerror}")
    sys.path.insert(0, os.getcwd())
    if cfg.pythonpath:
        for path in reversed([p for p in cfg.pythonpath.split(",") if p]):
            sys.path.insert(0, os.path.abspath(path))
    cfg.script_name = os.environ.get("SCRIPT_NAME", cfg.script_name)


def _load(target: str):
    try:
        return load_app(target)
    except AppLoadError as exc:
        _fail(EXIT_APP_LOAD, str(exc))
    except Exception as exc:  # the app's own import failed: show why
        log.print_stderr(traceback.format_exc().rstrip("\n"))
        _fail(EXIT_APP_LOAD, f"cannot load app {target!r}: {type(exc).__name__}: {exc}")


def main(argv=None) -> None:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    env_args = _env_args(parser)
    try:
        cfg, hooks, notes = load_settings(args, env_args)
    except config.ConfigFileError as exc:
        _fail(EXIT_USAGE, str(exc))
    if args.get("print_config"):
        for key, value in sorted(cfg.as_dict().items()):
            print(f"{key:28} = {value!r}")
        for name in sorted(hooks):
            print(f"{name:28} = <hook {getattr(hooks[name], '__qualname__', hooks[name])!r}>")
        return
    _prepare_environment(cfg)
    if not cfg.app:
        _fail(EXIT_USAGE, "no app given: pass APP (e.g. myproject.wsgi:application) or set wsgi_app in the config file")
    try:
        core = _ferrule.Config(cfg.as_dict())
        _ferrule.init_logging(core)
        log.install(cfg.log_level)
    except _ferrule.ConfigError as exc:
        _fail(EXIT_USAGE, str(exc))
    for note in notes:
        _ferrule.log_message("info", note)
    if args.get("check_config"):
        _load(cfg.app)
        print(f"ferrule: configuration OK ({cfg.workers} worker(s), app {cfg.app})")
        return
    app = preload(lambda: _load(cfg.app)) if cfg.preload_app else None

    def reload_config():
        fresh, fresh_hooks, _ = load_settings(args, env_args)
        if fresh.bind != cfg.bind:
            _ferrule.log_message("warning", "bind changed in the configuration; it applies after a restart")
        fresh.bind, fresh.script_name = cfg.bind, cfg.script_name
        # Checked here, in the master: a value only the core rejects keeps the old settings.
        fresh_core = _ferrule.Config(fresh.as_dict())
        log.install(fresh.log_level)
        return fresh, fresh_core, fresh_hooks

    arbiter = Arbiter(cfg, core, hooks, reload_config, app)
    try:
        code = arbiter.run()
    except _ferrule.ConfigError as exc:
        _fail(EXIT_USAGE, str(exc))
    except _ferrule.BindError as exc:
        _fail(EXIT_BIND, str(exc))
    except HaltServer as exc:
        _fail(exc.code, exc.reason)
    except Exception as exc:  # a start-up hook raised (already logged with its traceback)
        _fail(1, f"start-up failed: {type(exc).__name__}: {exc}")
    if code:
        _fail(code, "a worker could not start; see the error above")
    sys.exit(0)


if __name__ == "__main__":
    main()
