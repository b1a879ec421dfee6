"""The ``ferrule`` command: gunicorn's flags, names and defaults.

Exit codes: 0 after a signal-initiated stop, 2 for a bad flag or setting value,
3 when an address cannot be bound, 4 when the app cannot be loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from ferrule import _ferrule
from ferrule.loader import AppLoadError, load_app
from ferrule.settings import Settings, run

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


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="ferrule",
        description="Serve a WSGI app. APP is MODULE, MODULE:NAME or MODULE:factory(args).",
    )
    p.add_argument("app", metavar="APP", help="the WSGI app, e.g. myproject.wsgi:application")
    p.add_argument("-v", "--version", action="version", version=f"ferrule {_ferrule.__version__}")
    a = p.add_argument_group("server")
    a.add_argument("-b", "--bind", action="append", metavar="ADDRESS",
                   help="HOST:PORT, [::1]:PORT or unix:PATH; repeatable (default 127.0.0.1:8000, or 0.0.0.0:$PORT)")
    a.add_argument("-w", "--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "1")),
                   help="worker processes (only 1 for now)")
    a.add_argument("--threads", type=int, default=d.threads, help=f"threads per worker (default {d.threads})")
    a.add_argument("--backlog", type=int, default=d.backlog, help=f"listen queue length (default {d.backlog})")
    a.add_argument("--keep-alive", "--keepalive", dest="keep_alive", type=_positive_float, default=d.keep_alive,
                   help=f"seconds to keep an idle connection (default {d.keep_alive:g})")
    a.add_argument("--header-timeout", type=_positive_float, default=d.header_timeout,
                   help=f"seconds a client has to send a request head; 408 after (default {d.header_timeout:g})")
    a.add_argument("--io-timeout", type=_positive_float, default=d.io_timeout,
                   help=f"seconds a body read or response write may wait (default {d.io_timeout:g})")
    a.add_argument("--graceful-timeout", type=_positive_float, default=d.graceful_timeout,
                   help=f"seconds in-flight requests get on SIGTERM (default {d.graceful_timeout:g})")
    h = p.add_argument_group("HTTP parsing (gunicorn's names)")
    h.add_argument("--limit-request-line", type=int, default=d.limit_request_line)
    h.add_argument("--limit-request-fields", type=int, default=d.limit_request_fields)
    h.add_argument("--limit-request-field_size", "--limit-request-field-size", dest="limit_request_field_size",
                   type=int, default=d.limit_request_field_size)
    h.add_argument("--limit-request-body", type=int, default=d.limit_request_body,
                   help="largest request body in bytes, 413 above; 0 = no limit (default)")
    h.add_argument("--header-map", choices=["drop", "refuse", "dangerous"], default=d.header_map)
    h.add_argument("--permit-obsolete-folding", action="store_true")
    h.add_argument("--strip-header-spaces", action="store_true")
    h.add_argument("--casefold-http-method", action="store_true")
    h.add_argument("--permit-unconventional-http-method", action="store_true")
    h.add_argument("--forwarded-allow-ips", default=os.environ.get("FORWARDED_ALLOW_IPS", d.forwarded_allow_ips))
    e = p.add_argument_group("environment")
    e.add_argument("--chdir", help="change to this directory before loading the app")
    e.add_argument("--pythonpath", help="comma-separated directories to add to sys.path")
    e.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE", help="set an environment variable")
    lg = p.add_argument_group("logging")
    lg.add_argument("--log-level", default=d.log_level,
                    choices=["debug", "info", "warning", "error", "critical"])
    lg.add_argument("--error-logfile", "--log-file", dest="error_logfile", default=d.error_logfile,
                    help="error log file, '-' for stderr (default)")
    lg.add_argument("--access-logfile", default=d.access_logfile, help="access log file, '-' for stdout (default: none)")
    lg.add_argument("--access-logformat", default=d.access_logformat)
    return p


def _fail(code: int, message: str) -> "NoReturn":  # noqa: F821
    print(f"ferrule: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers != 1:
        _fail(EXIT_USAGE, f"--workers {args.workers}: only one worker process is supported so far; "
                          "use --threads for concurrency")
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(EXIT_USAGE, f"--env {item!r}: expected KEY=VALUE")
        os.environ[key] = value
    if args.chdir:
        try:
            os.chdir(args.chdir)
        except OSError as exc:
            _fail(EXIT_USAGE, f"--chdir {args.chdir!r}: {exc.strerror}")
    sys.path.insert(0, os.getcwd())
    if args.pythonpath:
        for path in reversed([p for p in args.pythonpath.split(",") if p]):
            sys.path.insert(0, os.path.abspath(path))
    binds = args.bind or ([f"0.0.0.0:{os.environ['PORT']}"] if os.environ.get("PORT") else ["127.0.0.1:8000"])
    options = dict(
        bind=binds, threads=args.threads, backlog=args.backlog, keep_alive=args.keep_alive,
        header_timeout=args.header_timeout, io_timeout=args.io_timeout, graceful_timeout=args.graceful_timeout,
        limit_request_line=args.limit_request_line, limit_request_fields=args.limit_request_fields,
        limit_request_field_size=args.limit_request_field_size, limit_request_body=args.limit_request_body,
        header_map=args.header_map, permit_obsolete_folding=args.permit_obsolete_folding,
        strip_header_spaces=args.strip_header_spaces, casefold_http_method=args.casefold_http_method,
        permit_unconventional_http_method=args.permit_unconventional_http_method,
        forwarded_allow_ips=args.forwarded_allow_ips, log_level=args.log_level,
        error_logfile=args.error_logfile, access_logfile=args.access_logfile,
        access_logformat=args.access_logformat,
    )
    try:
        app = load_app(args.app)
    except AppLoadError as exc:
        _fail(EXIT_APP_LOAD, str(exc))
    except Exception as exc:  # the app's own import failed: show why
        traceback.print_exc()
        _fail(EXIT_APP_LOAD, f"cannot load app {args.app!r}: {type(exc).__name__}: {exc}")
    try:
        run(app, **options)
    except _ferrule.ConfigError as exc:
        _fail(EXIT_USAGE, str(exc))
    except _ferrule.BindError as exc:
        _fail(EXIT_BIND, str(exc))


if __name__ == "__main__":
    main()
