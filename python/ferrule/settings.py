"""Settings with gunicorn's names and defaults, and the programmatic ``run``."""

from __future__ import annotations

import copy
import dataclasses
import os
import signal
from typing import Any, Callable, Dict, List, Optional

from ferrule import _ferrule, egress, limits, log, logconfig

#: gunicorn's default access log format.
DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

#: The default of every setting the Rust core reads, from its ``Default`` impls
#: (``ServerConfig``, ``ParserConfig``): each default is written once, there.
CORE = _ferrule.defaults()

#: Most threads per process running the app at once. ferrule runs one thread and
#: starts (or wakes) another only while every running one is blocked (database, HTTP
#: call, sleep) and requests wait, so a CPU-bound app never has threads fighting
#: over the GIL and a blocking app still gets concurrency without tuning.
DEFAULT_THREADS: int = CORE["threads"]


@dataclasses.dataclass
class Settings:
    """Every setting ``serve`` understands; field names match gunicorn's. Defaults of
    the settings the core reads come from it (``CORE``); the rest are ferrule's own."""

    bind: List[str] = dataclasses.field(default_factory=lambda: list(CORE["bind"]))
    threads: int = DEFAULT_THREADS
    workers: int = CORE["workers"]
    backlog: int = CORE["backlog"]
    reuse_port: bool = CORE["reuse_port"]
    #: Seconds an idle keep-alive connection is kept. Longer than the idle timeout of
    #: common load balancers (AWS ALB 60 s, nginx upstream keepalive 60 s), so the
    #: balancer always closes first and never sends a request into a closing socket.
    keep_alive: float = CORE["keep_alive"]
    header_timeout: float = CORE["header_timeout"]
    io_timeout: float = CORE["io_timeout"]
    #: Bytes of a complete answer the server keeps and writes itself when the client
    #: reads slowly, so the app's thread is free at once; 0: the thread always writes.
    response_buffer_size: int = CORE["response_buffer_size"]
    graceful_timeout: float = CORE["graceful_timeout"]
    limit_request_line: int = CORE["limit_request_line"]
    limit_request_fields: int = CORE["limit_request_fields"]
    limit_request_field_size: int = CORE["limit_request_field_size"]
    limit_request_body: int = CORE["limit_request_body"]
    #: Read a request's body before the app runs (nginx's proxy_request_buffering), so
    #: a slow client holds a buffer, not a thread; False: the app reads it as it arrives.
    request_buffering: bool = CORE["request_buffering"]
    #: Bodies up to this many bytes are held in memory, larger ones in a temporary file.
    request_buffer_size: int = CORE["request_buffer_size"]
    header_map: str = CORE["header_map"]
    permit_obsolete_folding: bool = CORE["permit_obsolete_folding"]
    strip_header_spaces: bool = CORE["strip_header_spaces"]
    casefold_http_method: bool = CORE["casefold_http_method"]
    permit_unconventional_http_method: bool = CORE["permit_unconventional_http_method"]
    #: Serve HTTP/1.1 requests without Host, as gunicorn does (default: 400, RFC 9112 §3.2).
    permit_missing_host: bool = CORE["permit_missing_host"]
    forwarded_allow_ips: str = CORE["forwarded_allow_ips"]
    #: The PROXY protocol header a connection from ``proxy_allow_ips`` must start with:
    #: off, v1, v2 or auto (either). Peers outside the list are served without one.
    proxy_protocol: str = CORE["proxy_protocol"]
    proxy_allow_ips: str = CORE["proxy_allow_ips"]
    #: gunicorn's table: header name -> the exact value that means https, from
    #: forwarded_allow_ips peers (names in any case); {} turns header schemes off.
    secure_scheme_headers: Dict[str, str] = dataclasses.field(
        default_factory=lambda: dict(CORE["secure_scheme_headers"]))
    #: The list that sets REMOTE_ADDR from forwarded_allow_ips peers: "off" (gunicorn's
    #: behaviour), "x-forwarded-for" or "forwarded" (its right-most untrusted entry).
    forwarded_remote_addr: str = CORE["forwarded_remote_addr"]
    #: What every bind speaks: "http", or "uwsgi" behind nginx uwsgi_pass / Apache mod_proxy_uwsgi.
    protocol: str = CORE["protocol"]
    #: TCP peers that may send uwsgi requests ("*": any); unix-socket peers always may.
    uwsgi_allow_ips: str = CORE["uwsgi_allow_ips"]
    #: TLS on every bind (gunicorn's meaning): the leaf certificate and its chain (PEM),
    #: and its key (PKCS#8, PKCS#1 or SEC1 PEM; None: in ``certfile``).
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    #: The CAs of client certificates (PEM), and whether one is asked for: 0 no,
    #: 1 optional, 2 required (gunicorn's ``ssl.CERT_*`` values).
    ca_certs: Optional[str] = None
    cert_reqs: int = 0
    # TLS settings beside the certificate.
    #: OpenSSL-style cipher list mapped to rustls' suites (docs/http.md); None: rustls' own.
    ciphers: Optional[str] = None
    # Metrics (docs/observability.md).
    #: HOST:PORT or unix:PATH where the master serves /metrics, /healthz, /readyz; None: off.
    metrics_bind: Optional[str] = None
    #: gunicorn's statsd settings: HOST:PORT (port 8125 by default) or unix:PATH.
    statsd_host: Optional[str] = None
    statsd_prefix: str = ""
    dogstatsd_tags: str = ""
    #: A Server-Timing response field (queue and app times): off, on (unless the app
    #: sent one), always (beside the app's).
    server_timing: str = "off"
    log_level: str = "info"
    error_logfile: Optional[str] = "-"
    access_logfile: Optional[str] = None
    access_logformat: str = DEFAULT_ACCESS_LOG_FORMAT
    #: Egress (docs/egress.md): one JSON line per outbound attempt of a worker ("-":
    #: stdout), and the rules (SPECs; each value may list several, comma-separated).
    #: Any of them turns egress on in every worker; none: nothing is installed.
    egress_log: Optional[str] = None
    egress_deny: List[str] = dataclasses.field(default_factory=list)
    egress_allow: List[str] = dataclasses.field(default_factory=list)
    # Syslog, gunicorn's settings (docs/logging.md "Syslog"): the error log, and the
    # access log unless disable_redirect_access_to_syslog, also go to syslog.
    syslog: bool = False
    #: unix://PATH[#dgram|#stream], udp://HOST:PORT or tcp://HOST:PORT (gunicorn's
    #: own default on Linux is udp://localhost:514).
    syslog_addr: str = CORE["syslog_addr"]
    #: The ident is gunicorn.<syslog_prefix>.error (.access); None: the process name.
    syslog_prefix: Optional[str] = None
    syslog_facility: str = CORE["syslog_facility"]
    #: rfc3164 (gunicorn's bytes) or rfc5424 (ferrule's own).
    syslog_format: str = CORE["syslog_format"]
    disable_redirect_access_to_syslog: bool = False
    script_name: str = CORE["script_name"]
    # The process model (read by the master and the workers, not by the Rust core).
    app: Optional[str] = None
    #: A request running longer than this gets its worker's stacks logged and the worker
    #: replaced; a worker silent this long (GIL held in native code) is killed. 0: never.
    timeout: float = 30.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    #: Resident memory (MB) above which a worker is replaced; 0: no limit.
    max_worker_memory: int = 0
    preload_app: bool = False
    pidfile: Optional[str] = None
    reload: bool = False
    user: Optional[str] = None
    group: Optional[str] = None
    umask: int = 0
    chdir: Optional[str] = None
    pythonpath: Optional[str] = None
    env: List[str] = dataclasses.field(default_factory=list)
    #: Supplementary groups of ``user`` too (gunicorn's ``--initgroups``).
    initgroups: bool = False
    #: Detach into the background (double fork); stdio to /dev/null unless
    #: enable_stdio_inheritance.
    daemon: bool = False
    enable_stdio_inheritance: bool = False
    #: When the error log is a file, the processes' stdout and stderr go into it too.
    capture_output: bool = False
    #: gunicorn's Python logging configuration (docs/logging.md): a fileConfig file, a
    #: dictConfig dict (over gunicorn's defaults), a JSON file of one. Any of them sends
    #: ferrule's error and access records to Python logging (``ferrule.logconfig``).
    log_config: Optional[str] = None
    log_config_dict: Dict[str, Any] = dataclasses.field(default_factory=dict)
    log_config_json: Optional[str] = None
    #: gunicorn settings ferrule has no field for, as given (see ``ferrule.gunicorn``).
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["syslog_name"] = self.syslog_name
        return d

    @property
    def syslog_settings(self) -> tuple:
        """What the error log's syslog is made from, once per master (a HUP keeps it)."""
        return (self.syslog, self.syslog_addr, self.syslog_facility, self.syslog_format, self.syslog_name,
                self.disable_redirect_access_to_syslog)

    @property
    def syslog_name(self) -> str:
        """gunicorn's ``syslog_prefix or proc_name``, where proc_name defaults to the app
        (``myapp:app``: the ident is ``gunicorn.myapp.app.error``)."""
        return (self.syslog_prefix or self.extra.get("proc_name") or self.extra.get("default_proc_name")
                or self.app or "ferrule")

    def __getattr__(self, name: str) -> Any:
        """gunicorn's names for hooks (``server.cfg.accesslog``, ``server.cfg.certfile``)."""
        if name.startswith("__") or name == "extra":
            raise AttributeError(name)
        from ferrule import gunicorn

        spec = gunicorn.BY_NAME.get(name)
        if spec is not None and spec.field is not None:
            return getattr(self, spec.field)
        if name in self.extra:
            return self.extra[name]
        if spec is not None:
            return copy.copy(spec.default)
        raise AttributeError(f"no setting {name!r}")

    @property
    def uid(self) -> int:
        """The workers' user id (gunicorn's ``cfg.uid``; the current one by default)."""
        return resolve_user(self.user) if self.user is not None else os.geteuid()

    @property
    def gid(self) -> int:
        return resolve_group(self.group) if self.group is not None else os.getegid()

    @property
    def worker_class_str(self) -> str:
        return "gthread"

    @property
    def is_ssl(self) -> bool:
        from ferrule import gunicorn

        return gunicorn.tls_on(self)

    @property
    def proc_name(self) -> str:
        return self.extra.get("proc_name") or self.extra.get("default_proc_name") or "ferrule"


def resolve_user(user: str) -> int:
    """A user name or numeric id as a uid; KeyError names an unknown user."""
    import pwd

    return int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid


def resolve_group(group: str) -> int:
    import grp

    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid


def _install_signal_handlers() -> None:
    """TERM: graceful stop; INT and QUIT: quick stop (gunicorn's meanings)."""

    def graceful(signum, frame):
        raise SystemExit(0)

    def quick(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGQUIT, quick)


def run(app: Callable, ready: Optional[Callable[[List[str]], None]] = None, **options) -> None:
    """Serves ``app`` until SIGTERM, SIGINT or SIGQUIT; options are :class:`Settings` fields.

    ``bind`` may be a string or a list of strings. Must be called from the main thread.
    """
    for listed in ("bind", "egress_deny", "egress_allow"):  # one string is a list of one
        if isinstance(options.get(listed), str):
            options[listed] = [options[listed]]
    if "script_name" not in options:
        options["script_name"] = os.environ.get("SCRIPT_NAME", "")
    try:
        settings = Settings(**options)
    except TypeError as e:
        raise _ferrule.ConfigError(str(e)) from None
    core = _ferrule.Config(settings.as_dict())
    log.install(settings.log_level)
    raised = limits.raise_fd_limit()
    _ferrule.init_logging(core)
    try:
        logconfig.install(settings)
    except logconfig.LogConfigError as exc:
        raise _ferrule.ConfigError(str(exc)) from None
    limits.log_fd_limit(log.Log(), raised)
    _install_signal_handlers()
    hint = _ferrule.egress_dns_hint(core)
    if hint:
        log.Log().warning(hint)
    egress.start(core, settings)  # the app is already imported: its import-time connects are not seen
    clean = _ferrule.serve(app, core, ready)
    if not clean:
        # Threads still inside the app must not run into interpreter shutdown.
        log.flush_std()
        os._exit(0)
