"""Every gunicorn 27 setting and hook, and what ferrule does with each.

A gunicorn setting is never dropped without a word. Each one is:

- ``IMPLEMENTED``: ferrule has it (maybe under its own field name, see ``field``);
- ``LOGGED``: accepted, with one log line saying what ferrule does instead, only where
  the setting's meaning is kept (``worker_tmp_dir``: ferrule's heartbeat needs no file);
  the TLS ones (``TLS_LOGGED``) only when TLS is on;
- ``REFUSED``: any value but gunicorn's default stops start-up (exit 2) with one line
  saying what to do, until ferrule implements it;
- ``INERT``: has an effect in gunicorn only together with a setting ferrule refuses
  unless it has its default (``statsd_prefix`` needs ``statsd_host``): checked and kept;
- ``COMMAND``: steers the command (``config``, ``check_config``, ``print_config``).

Values are checked with gunicorn's validators (``"4"`` is 4, ``"true"`` is True).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

# The validators the table names (config.py reaches them here too: ``g.pos_int``).
from ferrule.validators import (
    BadValue, addr_list, anything, boolean, cert_reqs, class_path, cleartext, dictionary, one_of, pos_int,
    proxy_protocol, scheme_headers, seconds, server_timing, string, string_list,
)

IMPLEMENTED, LOGGED, REFUSED, INERT, COMMAND = "implemented", "logged", "refused", "inert", "command"


# The catalogue -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    flags: Tuple[str, ...]
    status: str
    check: Callable[[Any], Any] = anything
    default: Any = None
    #: ferrule's Settings field, for IMPLEMENTED settings named differently.
    field: Optional[str] = None
    #: LOGGED: what ferrule does instead. REFUSED: why, and what to do.
    note: str = ""
    #: argparse action for the flags ferrule adds from this table.
    action: str = "store"
    metavar: Optional[str] = None


BACKLOG = ("ferrule sends no gunicorn.backlog gauge (the kernel's listen queue is not read); "
           "ferrule_request_queue_seconds (--metrics-bind) shows the wait for a thread")
LOGCONF = ("a logger class is not supported; configure Python logging with --log-config, logconfig_dict "
           "or --log-config-json (docs/logging.md)")
H2 = "HTTP/2 is not implemented yet; serve HTTP/2 from the front server (nginx, a load balancer)"
DIRTY = "dirty arbiters are not implemented; run the long tasks in a task queue (Celery, RQ)"
ASGI = "applies to gunicorn's ASGI worker only; ferrule serves WSGI"
NO_DIRTY = "applies to gunicorn's dirty arbiters only (dirty_apps, refused by ferrule)"


def _s(name, flags, status, check=anything, default=None, **kw) -> Spec:
    return Spec(name, tuple(flags), status, check, default, **kw)


SPECS: Tuple[Spec, ...] = (
    # Config File
    _s("config", ["-c", "--config"], COMMAND, string, "./gunicorn.conf.py"),
    _s("wsgi_app", [], IMPLEMENTED, string, field="app"),
    # Server Socket
    _s("bind", ["-b", "--bind"], IMPLEMENTED, string_list, ["127.0.0.1:8000"]),
    _s("backlog", ["--backlog"], IMPLEMENTED, pos_int, 2048),
    # Worker Processes
    _s("workers", ["-w", "--workers"], IMPLEMENTED, pos_int, 1),
    _s("worker_class", ["-k", "--worker-class"], LOGGED, class_path, "sync", metavar="STRING"),
    _s("threads", ["--threads"], IMPLEMENTED, pos_int, 1),
    _s("worker_connections", ["--worker-connections"], LOGGED, pos_int, 1000, metavar="INT",
       note="ferrule does not cap connections per worker (idle keep-alive connections hold no thread)"),
    _s("max_requests", ["--max-requests"], IMPLEMENTED, pos_int, 0),
    _s("max_requests_jitter", ["--max-requests-jitter"], IMPLEMENTED, pos_int, 0),
    _s("timeout", ["-t", "--timeout"], IMPLEMENTED, seconds, 30),
    _s("graceful_timeout", ["--graceful-timeout"], IMPLEMENTED, seconds, 30),
    _s("keepalive", ["--keep-alive"], IMPLEMENTED, seconds, 2, field="keep_alive"),
    # Security
    _s("limit_request_line", ["--limit-request-line"], IMPLEMENTED, pos_int, 4094),
    _s("limit_request_fields", ["--limit-request-fields"], IMPLEMENTED, pos_int, 100),
    _s("limit_request_field_size", ["--limit-request-field_size"], IMPLEMENTED, pos_int, 8190),
    # Debugging
    _s("reload", ["--reload"], IMPLEMENTED, boolean, False),
    _s("reload_engine", ["--reload-engine"], LOGGED, one_of("auto", "poll", "inotify"), "auto", metavar="STRING",
       note="ferrule's reloader checks the modification time of the app's Python files every second"),
    _s("reload_extra_files", ["--reload-extra-file"], REFUSED, string_list, [], action="append", metavar="FILES",
       note="not implemented: ferrule reloads on changes to the app's imported Python files only; "
            "send HUP after changing other files"),
    _s("spew", ["--spew"], REFUSED, boolean, False, action="store_true",
       note="not implemented: install a trace function (sys.settrace) in a post_worker_init hook"),
    _s("check_config", ["--check-config"], COMMAND, boolean, False),
    _s("print_config", ["--print-config"], COMMAND, boolean, False),
    # Server Mechanics
    _s("preload_app", ["--preload"], IMPLEMENTED, boolean, False),
    _s("sendfile", ["--no-sendfile"], REFUSED, boolean, None, action="store_false",
       note="not implemented: ferrule always sends wsgi.file_wrapper files with sendfile(2)"),
    _s("reuse_port", ["--reuse-port"], IMPLEMENTED, boolean, False),
    _s("chdir", ["--chdir"], IMPLEMENTED, string),
    _s("daemon", ["-D", "--daemon"], IMPLEMENTED, boolean, False),
    _s("raw_env", ["-e", "--env"], IMPLEMENTED, string_list, [], field="env"),
    _s("pidfile", ["-p", "--pid"], IMPLEMENTED, string),
    _s("worker_tmp_dir", ["--worker-tmp-dir"], LOGGED, string, metavar="DIR",
       note="ferrule's workers send their heartbeat over a pipe, not through a file, so no directory is needed"),
    _s("user", ["-u", "--user"], IMPLEMENTED, anything),
    _s("group", ["-g", "--group"], IMPLEMENTED, anything),
    _s("umask", ["-m", "--umask"], IMPLEMENTED, pos_int, 0),
    _s("initgroups", ["--initgroups"], IMPLEMENTED, boolean, False),
    _s("tmp_upload_dir", [], LOGGED, string,
       note="ferrule writes request bodies over --request-buffer-size to an unlinked file in $TMPDIR; "
            "set TMPDIR to choose the directory"),
    _s("secure_scheme_headers", [], IMPLEMENTED, scheme_headers,
       {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"}),
    _s("forwarded_allow_ips", ["--forwarded-allow-ips"], IMPLEMENTED, addr_list, "127.0.0.1,::1"),
    _s("pythonpath", ["--pythonpath"], IMPLEMENTED, string),
    _s("paste", ["--paste", "--paster"], REFUSED, string, metavar="STRING",
       note="PasteDeploy is not supported: load the app in a module (paste.deploy.loadapp) and pass MODULE:NAME"),
    _s("raw_paste_global_conf", ["--paste-global"], REFUSED, string_list, [], action="append", metavar="CONF",
       note="PasteDeploy is not supported: load the app in a module (paste.deploy.loadapp) and pass MODULE:NAME"),
    _s("proxy_protocol", ["--proxy-protocol"], IMPLEMENTED, proxy_protocol, "off", metavar="MODE"),
    _s("proxy_allow_ips", ["--proxy-allow-from"], IMPLEMENTED, addr_list, "127.0.0.1,::1", metavar="IPS"),
    _s("protocol", ["--protocol"], IMPLEMENTED, one_of("http", "uwsgi"), "http", metavar="STRING"),
    _s("uwsgi_allow_ips", ["--uwsgi-allow-from"], IMPLEMENTED, addr_list, "127.0.0.1,::1", metavar="IPS"),
    _s("permit_obsolete_folding", ["--permit-obsolete-folding"], IMPLEMENTED, boolean, False),
    _s("strip_header_spaces", ["--strip-header-spaces"], IMPLEMENTED, boolean, False),
    _s("permit_unconventional_http_method", ["--permit-unconventional-http-method"], IMPLEMENTED, boolean, False),
    _s("permit_unconventional_http_version", ["--permit-unconventional-http-version"], REFUSED, boolean, False,
       action="store_true",
       note="not implemented: ferrule serves HTTP/1.0 and HTTP/1.x and answers 400 to other versions"),
    _s("casefold_http_method", ["--casefold-http-method"], IMPLEMENTED, boolean, False),
    _s("forwarder_headers", ["--forwarder-headers"], REFUSED, string, "SCRIPT_NAME,PATH_INFO", metavar="STRING",
       note="not implemented: headers with underscores are handled by --header-map only; set SCRIPT_NAME in "
            "the environment for a mount prefix"),
    _s("header_map", ["--header-map"], IMPLEMENTED, one_of("drop", "refuse", "dangerous"), "drop"),
    _s("root_path", ["--root-path"], REFUSED, string, "", metavar="STRING",
       note="root_path is for ASGI apps; for a WSGI app under a prefix set the SCRIPT_NAME environment variable"),
    # Logging
    _s("accesslog", ["--access-logfile"], IMPLEMENTED, string, field="access_logfile"),
    _s("disable_redirect_access_to_syslog", ["--disable-redirect-access-to-syslog"], IMPLEMENTED, boolean, False,
       action="store_true"),
    _s("access_log_format", ["--access-logformat"], IMPLEMENTED, string, field="access_logformat"),
    _s("errorlog", ["--error-logfile", "--log-file"], IMPLEMENTED, string, "-", field="error_logfile"),
    _s("loglevel", ["--log-level"], IMPLEMENTED, one_of("debug", "info", "warning", "warn", "error", "critical"),
       "info", field="log_level"),
    _s("capture_output", ["--capture-output"], IMPLEMENTED, boolean, False),
    _s("logger_class", ["--logger-class"], REFUSED, class_path, "gunicorn.glogging.Logger", metavar="STRING",
       note=LOGCONF),
    _s("logconfig", ["--log-config"], IMPLEMENTED, string, metavar="FILE", field="log_config"),
    _s("logconfig_dict", ["--log-config-dict"], IMPLEMENTED, dictionary, {}, field="log_config_dict"),
    _s("logconfig_json", ["--log-config-json"], IMPLEMENTED, string, metavar="FILE", field="log_config_json"),
    # syslog_addr: gunicorn's default on Linux; ferrule's is unix:///dev/log (docs/logging.md).
    _s("syslog_addr", ["--log-syslog-to"], IMPLEMENTED, string, "udp://localhost:514", metavar="SYSLOG_ADDR"),
    _s("syslog", ["--log-syslog"], IMPLEMENTED, boolean, False, action="store_true"),
    _s("syslog_prefix", ["--log-syslog-prefix"], IMPLEMENTED, string, metavar="SYSLOG_PREFIX"),
    _s("syslog_facility", ["--log-syslog-facility"], IMPLEMENTED, string, "user", metavar="SYSLOG_FACILITY"),
    _s("enable_stdio_inheritance", ["-R", "--enable-stdio-inheritance"], IMPLEMENTED, boolean, False),
    _s("statsd_host", ["--statsd-host"], IMPLEMENTED, string, metavar="STATSD_ADDR"),
    _s("dogstatsd_tags", ["--dogstatsd-tags"], IMPLEMENTED, string, "", metavar="DOGSTATSD_TAGS"),
    _s("statsd_prefix", ["--statsd-prefix"], IMPLEMENTED, string, "", metavar="STATSD_PREFIX"),
    _s("enable_backlog_metric", ["--enable-backlog-metric"], LOGGED, boolean, False, action="store_true",
       note=BACKLOG),
    # Process Naming
    _s("proc_name", ["-n", "--name"], LOGGED, string, metavar="STRING",
       note="ferrule does not set process titles (ps shows the command line); hooks see it as server.cfg.proc_name"),
    _s("default_proc_name", [], INERT, string, "gunicorn", note="applies with proc_name only"),
    # SSL
    _s("keyfile", ["--keyfile"], IMPLEMENTED, string, metavar="FILE"),
    _s("certfile", ["--certfile"], IMPLEMENTED, string, metavar="FILE"),
    _s("cert_reqs", ["--cert-reqs"], IMPLEMENTED, cert_reqs, 0, metavar="INT"),
    _s("ca_certs", ["--ca-certs"], IMPLEMENTED, string, metavar="FILE"),
    # TLS settings beside the certificate: --ciphers is mapped to rustls' suites
    # (tls_ciphers.rs); the other three are logged, once TLS is on (tls_notes).
    _s("ciphers", ["--ciphers"], IMPLEMENTED, string, metavar="CIPHERS"),
    _s("ssl_version", ["--ssl-version"], LOGGED, anything, 2, metavar="VERSION",
       note="ferrule speaks TLS 1.2 and 1.3 only (rustls), whatever this says; older clients are refused"),
    _s("do_handshake_on_connect", ["--do-handshake-on-connect"], LOGGED, boolean, False, action="store_true",
       note="the server always completes the handshake before the app runs, on its own threads"),
    _s("suppress_ragged_eofs", ["--suppress-ragged-eofs"], LOGGED, boolean, True, action="store_true",
       note="a client closing without close_notify ends its stream, as with gunicorn's default (True)"),
    # HTTP/2
    _s("http_protocols", ["--http-protocols"], REFUSED, one_of("h1"), "h1", metavar="STRING", note=H2),
    _s("http2_cleartext", ["--http2-cleartext"], REFUSED, cleartext, "off", metavar="STRING", note=H2),
    *(_s(n, [f"--{n.replace('_', '-')}"], INERT, pos_int, d, metavar="INT", note="applies with HTTP/2 only")
      for n, d in (("http2_max_concurrent_streams", 100), ("http2_initial_window_size", 65535),
                   ("http2_max_frame_size", 16384), ("http2_max_header_list_size", 65536))),
    # ASGI worker
    _s("asgi_loop", ["--asgi-loop"], INERT, string, "auto", metavar="STRING", note=ASGI),
    _s("asgi_lifespan", ["--asgi-lifespan"], INERT, string, "auto", metavar="STRING", note=ASGI),
    _s("asgi_disconnect_grace_period", ["--asgi-disconnect-grace-period"], INERT, pos_int, 3, metavar="INT",
       note=ASGI),
    _s("websocket_max_message_size", ["--websocket-max-message-size"], INERT, pos_int, 16 * 1024 * 1024,
       metavar="INT", note=ASGI),
    _s("http_parser", ["--http-parser"], LOGGED, one_of("auto", "fast", "python"), "auto", metavar="STRING",
       note="ferrule parses HTTP with its own parser (Rust), whatever this says"),
    # Dirty arbiters
    _s("dirty_apps", ["--dirty-app"], REFUSED, string_list, [], action="append", metavar="STRING", note=DIRTY),
    _s("dirty_workers", ["--dirty-workers"], REFUSED, pos_int, 0, metavar="INT", note=DIRTY),
    *(_s(n, [f"--{n.replace('_', '-')}"], INERT, pos_int, d, metavar="INT", note=NO_DIRTY)
      for n, d in (("dirty_timeout", 300), ("dirty_threads", 1), ("dirty_graceful_timeout", 30))),
    # Control socket (gunicornc)
    _s("control_socket", ["--control-socket"], REFUSED, string, metavar="PATH",
       note="ferrule has no control socket (gunicornc); control it with signals (see docs/signals.md)"),
    _s("control_socket_mode", ["--control-socket-mode"], INERT, pos_int, 0o600, metavar="INT",
       note="applies with control_socket only"),
    _s("control_socket_disable", ["--no-control-socket"], INERT, boolean, False, action="store_true",
       note="ferrule has no control socket"),
)

BY_NAME: Dict[str, Spec] = {s.name: s for s in SPECS}

#: Hooks gunicorn knows that never run in ferrule, and why that keeps their meaning.
INERT_HOOKS: Dict[str, Tuple[int, str]] = {
    "ssl_context": (2, "ferrule's TLS is rustls, set by certfile, keyfile, ca_certs and cert_reqs; "
                       "an ssl.SSLContext cannot configure it"),
    "on_dirty_starting": (1, NO_DIRTY),
    "dirty_post_fork": (2, NO_DIRTY),
    "dirty_worker_init": (1, NO_DIRTY),
    "dirty_worker_exit": (2, NO_DIRTY),
}

_SYNC = ("sync", "gthread", "gunicorn.workers.sync.SyncWorker", "gunicorn.workers.gthread.ThreadWorker")
_GREEN = ("gevent", "eventlet", "tornado", "gevent_wsgi", "gevent_pywsgi")


def _same(spec: Spec, value: Any) -> bool:
    """A refused setting given gunicorn's default keeps gunicorn's (and ferrule's) meaning."""
    if spec.name == "sendfile":
        return value is None or value is True
    if spec.name == "logger_class":
        return value in ("simple", spec.default)
    if spec.default is None:
        return value in (None, "")
    return value == spec.default or (spec.default == [] and not value)


def worker_class_note(value: Any) -> str:
    """The log line for worker_class, or BadValue for a worker ferrule cannot stand in for."""
    name = value if isinstance(value, str) else getattr(value, "__name__", repr(value))
    name = name[len("egg:gunicorn#"):] if name.startswith("egg:gunicorn#") else name  # gunicorn's URI form
    if name in _SYNC or name in ("SyncWorker", "ThreadWorker"):
        return (f"worker_class {name!r}: ferrule's workers run the app on up to --threads threads (default 512), "
                "started only while requests block; set threads = 1 for one request at a time per worker")
    if name.split(".")[-1].lower() in _GREEN or any(g in name.lower() for g in ("gevent", "eventlet", "tornado")):
        raise BadValue(f"{name!r} is not available: ferrule serves WSGI on OS threads (no gevent/eventlet/tornado "
                       "workers); remove worker_class: threads start as requests block (--threads)")
    raise BadValue(f"{name!r} is not available: ferrule serves WSGI apps only, with its own threaded workers; "
                   "run an ASGI app with an ASGI server, and remove worker_class for a WSGI app")


#: LOGGED settings whose line is logged only when TLS is on: without TLS gunicorn ignores them too.
TLS_LOGGED = ("ssl_version", "do_handshake_on_connect", "suppress_ragged_eofs")


def tls_on(cfg: Any) -> bool:
    """gunicorn's meaning (a certificate: every bind is TLS), or an https bind."""
    return bool(getattr(cfg, "certfile", None)) or any(b.startswith("https") for b in cfg.bind)


def tls_notes(cfg: Any) -> List[str]:
    """The start-up lines for the TLS settings given that ferrule does not take."""
    if not tls_on(cfg):
        return []
    return [f"{name} = {cfg.extra[name]!r} accepted: {BY_NAME[name].note}" for name in TLS_LOGGED
            if name in cfg.extra]


def judge(spec: Spec, raw: Any) -> Tuple[Any, Optional[str]]:
    """Checks a value of a setting ferrule does not implement itself: returns the value
    gunicorn would hold and the line to log (None for none), or raises BadValue."""
    value = spec.check(raw)
    if spec.status == REFUSED and not _same(spec, value):
        raise BadValue(spec.note)
    if spec.name in TLS_LOGGED:
        return value, None  # logged by tls_notes once every layer says whether TLS is on
    if spec.status == LOGGED and spec.name == "worker_class":
        return value, worker_class_note(value)
    if spec.status == LOGGED:
        return value, f"{spec.name} = {value!r} accepted: {spec.note}"
    return value, None
