"""The ``ferrule`` command's flags: gunicorn's names, ferrule's help and defaults.

Flags carry no defaults (what was not given is absent, so the config file and the
CMD_ARGS variables can fill it); the help shows the defaults :class:`Settings` holds.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import NoReturn

from ferrule import _ferrule, config, gunicorn
from ferrule.settings import Settings

EXIT_USAGE = 2
EXIT_BIND = 3
EXIT_APP_LOAD = 4


class _Parser(argparse.ArgumentParser):
    """A bad value for a known flag, or an unknown flag, is one line, like a bad value
    in a config file: an unknown flag names the closest known one, or --help."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            message += self._hint(message.removeprefix("unrecognized arguments: ").split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        # gunicorn's --proxy-protocol takes no value: in `--proxy-protocol module:app` the
        # word after it is the app (no mode has a colon), so the flag is the bare one.
        args = list(sys.argv[1:] if args is None else args)
        for i, word in enumerate(args[:-1]):
            following = args[i + 1]
            if word == "--proxy-protocol" and ":" in following and not following.startswith("-"):
                args.insert(i + 1, "auto")
                break
        return super().parse_known_args(args, namespace)

    def _hint(self, words: list) -> str:
        known = [flag for action in self._actions for flag in action.option_strings if flag.startswith("--")]
        for word in words:
            close = difflib.get_close_matches(word.partition("=")[0], known, n=1)
            if close:
                return f" (did you mean {close[0]}?)"
        return f" (`{self.prog} --help` lists the flags)"


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
        return config.umask(text)
    except gunicorn.BadValue:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal umask from 0 to 0o777, like 022 or "
                                         "0o022") from None


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
docs/http.md, docs/logging.md, docs/observability.md, docs/egress.md, docs/ARCHITECTURE.md
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
        group.add_argument(*flags, **kwargs)


def _server_timing(text: str) -> str:
    try:
        return gunicorn.server_timing(text)
    except gunicorn.BadValue as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _metrics_flags(p: argparse.ArgumentParser) -> None:
    """Prometheus, statsd (gunicorn's flags) and per-request timing (docs/observability.md)."""
    m = p.add_argument_group("metrics")
    m.add_argument("--metrics-bind", metavar="ADDRESS",
                   help="HOST:PORT or unix:PATH where the master serves /metrics (Prometheus), /healthz and "
                        "/readyz (default: off)")
    m.add_argument("--statsd-host", metavar="STATSD_ADDR",
                   help="send gunicorn's statsd metrics to HOST:PORT (UDP) or unix:PATH (default: off)")
    m.add_argument("--statsd-prefix", metavar="STATSD_PREFIX", help="prefix of the statsd names (default none)")
    m.add_argument("--dogstatsd-tags", metavar="DOGSTATSD_TAGS",
                   help="comma-separated Datadog tags added to each statsd metric (default none)")
    m.add_argument("--server-timing", nargs="?", const="on", type=_server_timing, metavar="off|on|always",
                   help="add a Server-Timing field (queue;dur=MS, app;dur=MS) to responses: on (no value) keeps "
                        "the app's own field instead, always adds it beside (default off)")


def _syslog_flags(p: argparse.ArgumentParser, d: Settings) -> None:
    """gunicorn's syslog flags, and ferrule's --log-syslog-format (docs/logging.md "Syslog")."""
    s = p.add_argument_group("syslog (gunicorn's flags)")
    s.add_argument("--log-syslog", dest="syslog", action="store_true",
                   help="also send the error log, and the access log, to syslog (default off)")
    s.add_argument("--log-syslog-to", dest="syslog_addr", metavar="SYSLOG_ADDR",
                   help="unix://PATH[#dgram|#stream], udp://HOST:PORT or tcp://HOST:PORT "
                        f"(default {d.syslog_addr}; gunicorn's is udp://localhost:514)")
    s.add_argument("--log-syslog-prefix", dest="syslog_prefix", metavar="SYSLOG_PREFIX",
                   help="the ident is gunicorn.SYSLOG_PREFIX.error (.access) (default: the process name)")
    s.add_argument("--log-syslog-facility", dest="syslog_facility", metavar="SYSLOG_FACILITY",
                   help=f"user, daemon, local0 ... local7, or another syslog facility (default {d.syslog_facility})")
    s.add_argument("--log-syslog-format", dest="syslog_format", type=str.lower, choices=["rfc3164", "rfc5424"],
                   help=f"rfc3164 is gunicorn's bytes; rfc5424 adds time, host and pid fields "
                        f"(default {d.syslog_format})")
    s.add_argument("--disable-redirect-access-to-syslog", dest="disable_redirect_access_to_syslog",
                   action="store_true", help="keep the access log out of syslog (default off)")


def build_parser() -> argparse.ArgumentParser:
    """Flags carry no defaults: what was not given is absent, so the config file and
    the CMD_ARGS environment variables can fill it (Settings holds the defaults)."""
    d = Settings()
    p = _Parser(
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
                   help="HOST:PORT, tcp://HOST:PORT, [::1]:PORT, unix:PATH or fd://N; https://HOST:PORT "
                        "(https+unix:PATH) is always TLS, http://HOST:PORT (http+unix:PATH) never, even with "
                        "--certfile; repeatable (default 127.0.0.1:8000, or 0.0.0.0:$PORT)")
    a.add_argument("-w", "--workers", type=_count, metavar="INT",
                   help=f"worker processes (default {d.workers}, or $WEB_CONCURRENCY)")
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
    a.add_argument("--proxy-protocol", nargs="?", const="auto", metavar="MODE",
                   help="off, v1, v2 or auto: connections from --proxy-allow-from must start with a PROXY "
                        "protocol header (HAProxy send-proxy, AWS NLB), whose client becomes REMOTE_ADDR; "
                        f"no value means auto (default {d.proxy_protocol})")
    a.add_argument("--proxy-allow-from", dest="proxy_allow_ips", metavar="IPS",
                   help="addresses and networks that must send the PROXY header; others are served without "
                        f"one, and refused if they send one; '*' all (default {d.proxy_allow_ips})")
    a.add_argument("--protocol", type=str.lower, choices=["http", "uwsgi"],
                   help="what every bind speaks: http, or uwsgi for nginx uwsgi_pass and Apache "
                        f"mod_proxy_uwsgi (default {d.protocol})")
    a.add_argument("--uwsgi-allow-from", dest="uwsgi_allow_ips", metavar="IPS",
                   help="addresses and networks (10.0.0.0/8) that may send uwsgi requests over TCP; '*' all; "
                        f"unix sockets always may (default {d.uwsgi_allow_ips})")
    t = p.add_argument_group("TLS (rustls: TLS 1.2 and 1.3, ALPN http/1.1; with --certfile every bind is TLS)")
    t.add_argument("--certfile", metavar="FILE",
                   help="the certificate followed by its chain (PEM); every bind serves TLS (default none)")
    t.add_argument("--keyfile", metavar="FILE",
                   help="its private key: PKCS#8, PKCS#1 or SEC1 PEM (default: in --certfile)")
    t.add_argument("--ca-certs", dest="ca_certs", metavar="FILE",
                   help="the CAs that sign client certificates (PEM), for --cert-reqs 1 or 2 (default none)")
    t.add_argument("--cert-reqs", dest="cert_reqs", metavar="INT",
                   help="client certificates: 0 not asked for, 1 optional (a bad one is refused), "
                        "2 required (default 0)")
    t.add_argument("--ciphers", metavar="CIPHERS",
                   help="OpenSSL-style cipher list (ECDHE+AESGCM:!aNULL, Mozilla's lists), mapped to the TLS 1.2 "
                        "suites rustls has; TLS 1.3's are kept unless named (default: rustls' suites)")
    w = p.add_argument_group("workers")
    w.add_argument("-t", "--timeout", type=_positive_float, metavar="SECONDS",
                   help=f"seconds a request may be stuck in the app (no byte of its answer, or none of its "
                        f"next block) before it is answered 500 and its worker replaced (stacks logged); waits "
                        f"on the client do not count; also the heartbeat limit; 0 = never (default {d.timeout:g})")
    w.add_argument("--graceful-timeout", type=_positive_float, metavar="SECONDS",
                   help=f"seconds in-flight requests get on SIGTERM (default {d.graceful_timeout:g})")
    w.add_argument("--max-requests", type=_count, metavar="INT",
                   help=f"replace a worker after this many requests (default {d.max_requests}; 0: never)")
    w.add_argument("--max-requests-jitter", type=_count, metavar="INT",
                   help=f"add 0..N to --max-requests per worker (default {d.max_requests_jitter})")
    w.add_argument("--max-worker-memory", type=_count, metavar="MB",
                   help=f"replace a worker whose resident memory exceeds MB (default {d.max_worker_memory}; 0: no limit)")
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
                   help=f"largest request body in bytes, 413 above; 0 = no limit (default {d.limit_request_body})")
    h.add_argument("--request-buffering", type=_on_off, metavar="on|off",
                   help="read each request body before the app runs, so slow clients hold no thread; off: "
                        f"the app reads it as it arrives (default {'on' if d.request_buffering else 'off'})")
    h.add_argument("--request-buffer-size", type=_count, metavar="BYTES",
                   help=f"bodies up to this size are buffered in memory, larger ones in an unlinked file in "
                        f"$TMPDIR (default {d.request_buffer_size})")
    h.add_argument("--header-map", choices=["drop", "refuse", "dangerous"],
                   help=f"header names with '_': drop them, refuse the request, or pass them (default {d.header_map})")
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
                   help="addresses and networks (10.0.0.0/8) of trusted proxies, whose scheme headers (X-Forwarded-Proto, "
                        "Forwarded) are believed; '*' any peer "
                        f"(default {d.forwarded_allow_ips}, or $FORWARDED_ALLOW_IPS)")
    h.add_argument("--forwarded-remote-addr", type=str.lower, choices=["off", "x-forwarded-for", "forwarded"],
                   help="set REMOTE_ADDR from this list's right-most entry not in --forwarded-allow-ips, as "
                        f"those proxies send it (default {d.forwarded_remote_addr})")
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
    lg.add_argument("--access-logformat", "--access-log-format", dest="access_logformat", metavar="FORMAT",
                    help="gunicorn's access log atoms, or json[:{NAME}i,{KEY}e,...] for one JSON object "
                         "per request (default: gunicorn's format)")
    eg = p.add_argument_group("egress (docs/egress.md)")
    eg.add_argument("--egress-log", metavar="FILE",
                    help="one JSON line per outbound connect/UDP send of the workers, '-' for stdout (default: none)")
    eg.add_argument("--egress-deny", action="append", metavar="SPEC",
                    help="refuse (EACCES) connects/sends to IP, CIDR, host.name or *.domain, each with optional "
                         ":PORT ([v6]:PORT), or metadata / private / nameserver (DNS); repeatable, comma-separated (default none)")
    eg.add_argument("--egress-allow", action="append", metavar="SPEC",
                    help="once given, refuse every destination not allowed, DNS too unless 'nameserver' is allowed; "
                         "deny wins; repeatable, comma-separated (default none)")
    lg.add_argument("--log-config", metavar="FILE",
                    help="Python logging fileConfig file for ferrule's error and access records (default: none)")
    lg.add_argument("--log-config-dict", metavar="JSON",
                    help="Python logging dictConfig as JSON, over gunicorn's defaults (default: none)")
    lg.add_argument("--log-config-json", metavar="FILE",
                    help="Python logging dictConfig JSON file, over gunicorn's defaults (default: none)")
    lg.add_argument("--capture-output", action="store_true",
                    help="with a file error log, send stdout and stderr of every process into it (default off)")
    lg.add_argument("-R", "--enable-stdio-inheritance", action="store_true",
                    help="with --daemon, keep stdout and stderr instead of /dev/null (default off)")
    _metrics_flags(p)
    _syslog_flags(p, d)
    known = {opt for act in p._actions for opt in act.option_strings}
    _gunicorn_flags(p, known)
    return p
