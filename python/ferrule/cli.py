"""The ``ferrule`` command: gunicorn's flags, names and defaults.

Exit codes: 0 after a signal-initiated stop, 2 for a bad flag or setting value,
3 when an address cannot be bound, 4 when the app cannot be loaded.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import os
import shlex
import sys
import traceback
from typing import List, NoReturn, Tuple

from ferrule import _ferrule, config, daemon, gunicorn, log, logconfig, upgrade
from ferrule.arbiter import Arbiter, HaltServer, preload
from ferrule.flags import EXIT_APP_LOAD, EXIT_BIND, EXIT_USAGE, build_parser
from ferrule.loader import AppLoadError, load_app
from ferrule.settings import Settings

__all__ = ["EXIT_APP_LOAD", "EXIT_BIND", "EXIT_USAGE", "build_parser", "load_settings", "main"]


def _fail(code: int, message: str) -> NoReturn:
    log.print_stderr(f"ferrule: error: {message}")
    daemon.report(f"{code} {message}")
    sys.exit(code)


#: Flags that steer this command rather than set a setting.
_COMMAND_FLAGS = ("config", "check_config", "print_config")


def _env_args(parser: argparse.ArgumentParser) -> dict:
    """Settings from FERRULE_CMD_ARGS, or GUNICORN_CMD_ARGS when it is unset."""
    for name in ("FERRULE_CMD_ARGS", "GUNICORN_CMD_ARGS"):
        text = os.environ.get(name)
        if text:
            try:
                words = shlex.split(text)
            except ValueError as exc:  # "No closing quotation"
                _fail(EXIT_USAGE, f"{name}: cannot split {text!r} into arguments: {exc}")
            # One line naming the variable, instead of argparse's usage and error lines.
            parser.error = lambda message, name=name: _fail(EXIT_USAGE, f"{name}={text!r}: {message}")
            try:
                return vars(parser.parse_args(words))
            finally:
                del parser.error
    return {}


def load_settings(args: dict, env_args: dict, start_dir: str = "") -> Tuple[Settings, dict, List[str]]:
    """Defaults, then the config file (a relative path from ``start_dir``), then the
    environment's args, then the command line."""
    base = Settings()
    if os.environ.get("WEB_CONCURRENCY", "").isdigit():
        base.workers = int(os.environ["WEB_CONCURRENCY"])
    if os.environ.get("PORT"):
        base.bind = [f"0.0.0.0:{os.environ['PORT']}"]
    if os.environ.get("FORWARDED_ALLOW_IPS"):
        base.forwarded_allow_ips = config.coerce("forwarded_allow_ips", os.environ["FORWARDED_ALLOW_IPS"],
                                                 "FORWARDED_ALLOW_IPS")
    path = config.find_config_file(args.get("config") or env_args.get("config"), start_dir)
    hooks: dict = {}
    notes: List[str] = []
    if path:
        values, hooks, notes = config.read_config_file(path)
        base = config.apply(base, values)
    env_name = "FERRULE_CMD_ARGS" if os.environ.get("FERRULE_CMD_ARGS") else "GUNICORN_CMD_ARGS"
    for layer, where in ((env_args, f"{env_name}:"), (args, "")):
        given = {k: v for k, v in layer.items() if k not in _COMMAND_FLAGS and v is not None}
        values, more = config.resolve(given, where, cli=True)
        base = config.apply(base, values)
        notes += more
    if base.workers < 1:
        raise config.ConfigFileError(f"workers must be an integer >= 1 (got {base.workers})")
    check_owner(base)
    return base, hooks, notes + gunicorn.tls_notes(base)


#: The largest user or group id (uid_t; (uid_t)-1 means "no change").
_ID_MAX = 2**32 - 2


def check_owner(cfg: Settings) -> None:
    """-u/-g name a user and group that exist, and that this process may switch to."""
    from ferrule.settings import resolve_group, resolve_user

    ids = []
    for what, name, resolve, current in (("user", cfg.user, resolve_user, os.geteuid()),
                                          ("group", cfg.group, resolve_group, os.getegid())):
        if name is None:
            continue
        try:
            ids.append((what, name, resolve(name), current))
        except KeyError:
            raise config.ConfigFileError(f"{what} {name!r} (--{what}): no such {what} on this system") from None
    for what, name, number, current in ids:
        if number > _ID_MAX:  # setuid() would raise OverflowError in every worker
            raise config.ConfigFileError(f"{what} {name!r} (--{what}): an id is at most {_ID_MAX}")
        if number != current and os.geteuid() != 0:
            raise config.ConfigFileError(f"{what} {name!r} (--{what}): switching the workers to another {what} "
                                         f"needs root (ferrule runs as uid {os.geteuid()})")
    if cfg.initgroups and cfg.user is not None and os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwuid(cfg.uid)
        except KeyError:
            raise config.ConfigFileError(f"user {cfg.user!r} (--user): --initgroups needs a user in the password "
                                         "database (its groups are looked up by name)") from None


def describe(cfg: Settings) -> List[Tuple[str, object]]:
    """Every setting under gunicorn's name (ferrule-only ones under their own), sorted:
    gunicorn's settings ferrule implements or was given, then ferrule's own."""
    mapped = {s.field or s.name for s in gunicorn.SPECS if s.status == gunicorn.IMPLEMENTED}
    out = [(s.name, getattr(cfg, s.name)) for s in gunicorn.SPECS
           if s.status == gunicorn.IMPLEMENTED or s.name in cfg.extra]
    own = [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
           if f.name not in mapped and f.name != "extra"]
    return sorted(out) + sorted(own)


def _apply_env(env: List[str]) -> None:
    """raw_env (-e) into os.environ, for the master and the workers it forks: at start-up
    and on HUP, as gunicorn's reload does. Nothing is set unless every entry is good."""
    pairs = []
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise config.ConfigFileError(f"--env {item!r}: expected KEY=VALUE")
        pairs.append((key, value))
    os.environ.update(pairs)


def _prepare_environment(cfg: Settings) -> None:
    try:
        _apply_env(cfg.env)
    except config.ConfigFileError as exc:
        _fail(EXIT_USAGE, str(exc))
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
    if cfg.pidfile:  # checked before binding, and by --check-config (relative to --chdir)
        where = os.path.dirname(os.path.abspath(cfg.pidfile))
        if not os.path.isdir(where):
            _fail(EXIT_USAGE, f"--pid {cfg.pidfile!r}: directory {where!r} does not exist")


def _load(target: str):
    try:
        return load_app(target)
    except AppLoadError as exc:
        _fail(EXIT_APP_LOAD, str(exc))
    except Exception as exc:  # the app's own import failed: show why
        log.print_stderr(traceback.format_exc().rstrip("\n"))
        _fail(EXIT_APP_LOAD, f"cannot load app {target!r}: {type(exc).__name__}: {exc}")


def main(argv=None) -> None:
    log.flush_at_exit()  # --help, --version, --print-config | head -1: exit 0, not 120
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    start_dir = os.getcwd()  # where a HUP looks for the config file after --chdir
    env_args = _env_args(parser)
    try:
        cfg, hooks, notes = load_settings(args, env_args)
    except config.ConfigFileError as exc:
        _fail(EXIT_USAGE, str(exc))
    if args.get("print_config"):
        lines = [f"{key:28} = {value!r}" for key, value in describe(cfg)]
        lines += [f"{name:28} = <hook {getattr(hook, '__qualname__', hook)!r}>" for name, hook in sorted(hooks.items())]
        log.print_stdout("\n".join(lines))
        return
    _prepare_environment(cfg)
    if not cfg.app:
        _fail(EXIT_USAGE, "no app given: pass APP (e.g. myproject.wsgi:application) or set wsgi_app in the config file")
    try:
        core = _ferrule.Config(cfg.as_dict())
        _ferrule.init_logging(core)
        atexit.register(_ferrule.finish_syslog)  # the master's last lines ("Shutting down")
        log.install(cfg.log_level)
        logconfig.install(cfg)
    except _ferrule.ConfigError as exc:
        _fail(EXIT_USAGE, str(exc))
    except logconfig.LogConfigError as exc:
        _fail(EXIT_BIND if exc.unreadable else EXIT_USAGE, str(exc))
    except (_ferrule.TlsError, _ferrule.EgressLogError) as exc:
        _fail(EXIT_BIND, str(exc))
    for note in notes:
        _ferrule.log_message("info", note)
    _ferrule.log_message("debug", "Current configuration:\n" + "\n".join(
        f"  {key}: {value}" for key, value in describe(cfg)))
    if args.get("check_config"):
        _load(cfg.app)
        log.print_stdout(f"ferrule: configuration OK ({cfg.workers} worker(s), app {cfg.app})")
        return
    # A master re-executed by USR2 (upgrade.py) is already detached: daemonizing again
    # would look to the old master like its new master exiting at once.
    if cfg.daemon and not any(os.environ.get(v) for v in upgrade.PID_VARS):
        daemon.daemonize(cfg.enable_stdio_inheritance)
        hooks = daemon.report_when_ready(hooks)
    if cfg.capture_output:
        daemon.capture_output(cfg.error_logfile)
    app = preload(lambda: _load(cfg.app)) if cfg.preload_app else None

    def reload_config():
        fresh, fresh_hooks, _ = load_settings(args, env_args, start_dir)
        if fresh.bind != cfg.bind:
            _ferrule.log_message("warning", "bind changed in the configuration; it applies after a restart")
        fresh.bind, fresh.script_name = cfg.bind, cfg.script_name
        if fresh.metrics_bind != cfg.metrics_bind:
            _ferrule.log_message("warning", "metrics_bind changed in the configuration; it applies after a restart")
        fresh.metrics_bind = cfg.metrics_bind
        if fresh.syslog_settings != cfg.syslog_settings:
            _ferrule.log_message("warning", "syslog settings changed in the configuration; they apply after a restart")
        for name in ("syslog", "syslog_addr", "syslog_prefix", "syslog_facility", "syslog_format",
                     "disable_redirect_access_to_syslog"):
            setattr(fresh, name, getattr(cfg, name))
        # Checked here, in the master: a value only the core rejects keeps the old settings.
        fresh_core = _ferrule.Config(fresh.as_dict())
        _apply_env(fresh.env)
        log.install(fresh.log_level)
        logconfig.install(fresh)
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
