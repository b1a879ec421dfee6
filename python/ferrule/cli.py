"""The ``ferrule`` command: gunicorn's flags, names and defaults.

Exit codes: 0 after a signal-initiated stop, 2 for a bad flag or setting value,
3 when an address cannot be bound, 4 when the app cannot be loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import traceback
from typing import List, NoReturn, Tuple

from ferrule import _ferrule, config, daemon, gunicorn, log, upgrade
from ferrule.arbiter import Arbiter, HaltServer, preload
from ferrule.loader import AppLoadError, load_app
from ferrule.settings import Settings

EXIT_USAGE = 2
EXIT_BIND = 3
EXIT_APP_LOAD = 4


def _positive_float(text: str) -> float:
    try:
        return gunicorn.seconds(text)
    except gunicorn.BadValue:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0 (a number of seconds)") from None


def _count(text: str) -> int:
    try:
        return gunicorn.pos_int(text)
    except gunicorn.BadValue as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _on_off(text: str) -> bool:
    try:
        return config.on_off(text)
    except gunicorn.BadValue as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _umask(text: str) -> int:
    try:
        return config.coerce("umask", text)
    except config.ConfigFileError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal umask like 022 or 0o022") from None


EPILOG = """\
settings come from, lowest first: defaults, the config file (-c; default ./ferrule.conf.py
or ./gunicorn.conf.py), FERRULE_CMD_ARGS (or GUNICORN_CMD_ARGS), then this command line.
gunicorn's flags and setting names work; those ferrule does not implement yet stop start-up
with a line saying what to do (see docs/migrating-from-gunicorn.md).

signals (to the master):
  TERM        graceful stop (requests in flight get --graceful-timeout)
  INT, QUIT   quick stop
  HUP         re-read the configuration, replace every worker
  TTIN, TTOU  one worker more, one fewer
  USR1        reopen the log files
  USR2        re-execute the master (binary upgrade), beside the running one
  WINCH       stop the workers, keep the master (after USR2)

exit codes:
  0  stopped by a signal        1  the on_starting hook raised
  2  bad flag or setting        3  an address could not be bound, or a boot hook raised
  4  the app could not be imported

docs: README.md, docs/migrating-from-gunicorn.md, docs/deploy.md, docs/signals.md,
docs/http.md, docs/ARCHITECTURE.md
"""


def _gunicorn_flags(p: argparse.ArgumentParser, known: set) -> None:
    """gunicorn flags ferrule has no setting for: logged, or refused with what to do."""
    logged = p.add_argument_group("gunicorn flags accepted with a log line saying what ferrule does instead")
    other = p.add_argument_group("gunicorn flags not implemented: refused unless given gunicorn's default")
    for spec in gunicorn.SPECS:
        flags = [f for f in spec.flags if f not in known]
        if not flags or spec.status in (gunicorn.IMPLEMENTED, gunicorn.COMMAND):
            continue
        group = logged if spec.status == gunicorn.LOGGED else other
        what = {gunicorn.LOGGED: "", gunicorn.INERT: "no effect: ",
                gunicorn.REFUSED: "refused: "}[spec.status] + spec.note.split(";")[0]
        if spec.name == "worker_class":
            what = "sync and gthread accepted (ferrule's threaded workers); others refused"
        kwargs = {"dest": spec.name, "action": spec.action,
                  "help": f"{what} (gunicorn's default {spec.default!r})".replace("%", "%%")}
        if spec.action in ("store", "append"):
            kwargs["metavar"] = spec.metavar or "VALUE"
        if spec.name == "proxy_protocol":
            kwargs.update(nargs="?", const="auto")
        group.add_argument(*flags, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """Flags carry no defaults: what was not given is absent, so the config file and
    the CMD_ARGS environment variables can fill it (Settings holds the defaults)."""
    d = Settings()
    p = argparse.ArgumentParser(
        prog="ferrule", usage="ferrule [OPTIONS] [APP]", argument_default=argparse.SUPPRESS, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve a WSGI app. APP is MODULE, MODULE:NAME or MODULE:factory(args).",
    )
    p.add_argument("app", metavar="APP", nargs="?",
                   help="the WSGI app, e.g. myproject.wsgi:application (or wsgi_app in the config file)")
    p.add_argument("-v", "--version", action="version", version=f"ferrule {_ferrule.__version__}",
                   help="print ferrule's version and exit")
    c = p.add_argument_group("configuration")
    c.add_argument("-c", "--config", metavar="FILE",
                   help="gunicorn.conf.py-style file, or python:MODULE "
                        "(default: ./ferrule.conf.py or ./gunicorn.conf.py if present)")
    c.add_argument("--check-config", action="store_true",
                   help="check the settings and that the app loads, then exit (default off)")
    c.add_argument("--print-config", action="store_true",
                   help="print every setting's value (gunicorn's names), then exit (default off)")
    a = p.add_argument_group("server")
    a.add_argument("-b", "--bind", action="append", metavar="ADDRESS",
                   help="HOST:PORT, tcp://HOST:PORT, [::1]:PORT, unix:PATH or fd://N; repeatable "
                        "(default 127.0.0.1:8000, or 0.0.0.0:$PORT)")
    a.add_argument("-w", "--workers", type=_count, metavar="INT",
                   help="worker processes (default 1, or $WEB_CONCURRENCY)")
    a.add_argument("--threads", type=_count, metavar="INT",
                   help=f"most threads per worker, started only while requests block; 1 for an app "
                        f"that is not thread-safe (default {d.threads})")
    a.add_argument("--backlog", type=_count, metavar="INT", help=f"listen queue length (default {d.backlog})")
    a.add_argument("--reuse-port", action="store_true", help="set SO_REUSEPORT on TCP listeners (default off)")
    a.add_argument("--keep-alive", "--keepalive", dest="keep_alive", type=_positive_float, metavar="SECONDS",
                   help=f"seconds to keep an idle connection (default {d.keep_alive:g}; gunicorn's is 2)")
    a.add_argument("--header-timeout", type=_positive_float, metavar="SECONDS",
                   help=f"seconds a client has to send a request head; 408 after (default {d.header_timeout:g})")
    a.add_argument("--io-timeout", type=_positive_float, metavar="SECONDS",
                   help=f"seconds a body read or response write may wait (default {d.io_timeout:g})")
    a.add_argument("--response-buffer-size", type=_count, metavar="BYTES",
                   help=f"a complete answer up to this size that a slow client does not take at once is "
                        f"written by the server, freeing the app's thread; 0 = never "
                        f"(default {d.response_buffer_size})")
    w = p.add_argument_group("workers")
    w.add_argument("-t", "--timeout", type=_positive_float, metavar="SECONDS",
                   help=f"seconds a request may be stuck in the app (no byte of its answer, or none of its "
                        f"next block) before it is answered 500 and its worker replaced (stacks logged); waits "
                        f"on the client do not count; also the heartbeat limit; 0 = never (default {d.timeout:g})")
    w.add_argument("--graceful-timeout", type=_positive_float, metavar="SECONDS",
                   help=f"seconds in-flight requests get on SIGTERM (default {d.graceful_timeout:g})")
    w.add_argument("--max-requests", type=_count, metavar="INT",
                   help="replace a worker after this many requests (default 0: never)")
    w.add_argument("--max-requests-jitter", type=_count, metavar="INT",
                   help="add 0..N to --max-requests per worker (default 0)")
    w.add_argument("--max-worker-memory", type=_count, metavar="MB",
                   help="replace a worker whose resident memory exceeds MB (default 0: no limit)")
    w.add_argument("--preload", dest="preload_app", action="store_true",
                   help="import the app in the master before forking (copy-on-write) (default off)")
    w.add_argument("--reload", action="store_true",
                   help="replace workers when the app's Python files change (default off)")
    w.add_argument("-p", "--pid", dest="pidfile", metavar="FILE", help="write the master's pid here (default none)")
    w.add_argument("-D", "--daemon", action="store_true",
                   help="detach into the background (double fork; stdio to /dev/null) (default off)")
    w.add_argument("-u", "--user", help="switch worker processes to this user, name or id (default: stay)")
    w.add_argument("-g", "--group", help="switch worker processes to this group, name or id (default: stay)")
    w.add_argument("--initgroups", action="store_true",
                   help="also give the workers every group of --user (default off)")
    w.add_argument("-m", "--umask", type=_umask, help="umask of the server, octal (default 0)")
    h = p.add_argument_group("HTTP parsing (gunicorn's names)")
    h.add_argument("--limit-request-line", type=_count, metavar="INT",
                   help=f"longest request line in bytes, refused above; 0 = no limit (default {d.limit_request_line})")
    h.add_argument("--limit-request-fields", type=_count, metavar="INT",
                   help=f"most header fields, 431 above (default {d.limit_request_fields})")
    h.add_argument("--limit-request-field_size", "--limit-request-field-size", dest="limit_request_field_size",
                   type=_count, metavar="INT",
                   help=f"largest header field in bytes, 431 above (default {d.limit_request_field_size})")
    h.add_argument("--limit-request-body", type=_count, metavar="INT",
                   help="largest request body in bytes, 413 above; 0 = no limit (default 0)")
    h.add_argument("--request-buffering", type=_on_off, metavar="on|off",
                   help="read each request body before the app runs, so slow clients hold no thread; off: "
                        "the app reads it as it arrives (default on)")
    h.add_argument("--request-buffer-size", type=_count, metavar="BYTES",
                   help=f"bodies up to this size are buffered in memory, larger ones in an unlinked file in "
                        f"$TMPDIR (default {d.request_buffer_size})")
    h.add_argument("--header-map", choices=["drop", "refuse", "dangerous"],
                   help="header names with '_': drop them, refuse the request, or pass them (default drop)")
    h.add_argument("--permit-obsolete-folding", action="store_true",
                   help="accept obsolete line folding in headers (default off: 400)")
    h.add_argument("--strip-header-spaces", action="store_true",
                   help="strip spaces between a header name and ':' (default off: 400)")
    h.add_argument("--casefold-http-method", action="store_true",
                   help="upper-case lower-case methods (default off)")
    h.add_argument("--permit-unconventional-http-method", action="store_true",
                   help="accept methods outside gunicorn's conventions (default off)")
    h.add_argument("--permit-missing-host", action="store_true",
                   help="serve HTTP/1.1 requests without Host, as gunicorn does (default off: 400)")
    h.add_argument("--forwarded-allow-ips", metavar="IPS",
                   help="addresses and networks (10.0.0.0/8) whose X-Forwarded-Proto is trusted; '*' all "
                        f"(default {d.forwarded_allow_ips}, or $FORWARDED_ALLOW_IPS)")
    e = p.add_argument_group("environment")
    e.add_argument("--chdir", help="change to this directory before loading the app (default: stay)")
    e.add_argument("--pythonpath", help="comma-separated directories to add to sys.path (default none)")
    e.add_argument("-e", "--env", action="append", metavar="KEY=VALUE",
                   help="set an environment variable; repeatable (default none)")
    lg = p.add_argument_group("logging")
    lg.add_argument("--log-level", type=str.lower, choices=["debug", "info", "warning", "warn", "error", "critical"],
                    help="error log level, any case; debug also logs the configuration (default info)")
    lg.add_argument("--error-logfile", "--log-file", dest="error_logfile", metavar="FILE",
                    help="error log file, '-' for stderr (default -)")
    lg.add_argument("--access-logfile", metavar="FILE", help="access log file, '-' for stdout (default: none)")
    lg.add_argument("--access-logformat", metavar="FORMAT",
                    help="gunicorn's access log atoms (default: gunicorn's format)")
    lg.add_argument("--capture-output", action="store_true",
                    help="with a file error log, send stdout and stderr of every process into it (default off)")
    lg.add_argument("-R", "--enable-stdio-inheritance", action="store_true",
                    help="with --daemon, keep stdout and stderr instead of /dev/null (default off)")
    known = {opt for act in p._actions for opt in act.option_strings}
    _gunicorn_flags(p, known)
    return p


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
    return base, hooks, notes


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
        log.install(cfg.log_level)
    except _ferrule.ConfigError as exc:
        _fail(EXIT_USAGE, str(exc))
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
        # Checked here, in the master: a value only the core rejects keeps the old settings.
        fresh_core = _ferrule.Config(fresh.as_dict())
        _apply_env(fresh.env)
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
