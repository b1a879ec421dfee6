"""A worker process: what runs after the master forks. It loads the app (unless the
master preloaded it), serves on the inherited sockets, and keeps the master informed
over a pipe: ``.`` heartbeat, ``U`` accepting, ``R`` please replace me (max-requests,
memory, timeout, changed source files)."""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, NoReturn, Optional

from ferrule import _ferrule, daemon
from ferrule.loader import AppLoadError, load_app
from ferrule.log import Log, flush_std

#: Exit codes the master understands: the app could not be imported / a boot hook failed.
EXIT_APP_LOAD = 4
EXIT_BOOT = 3

#: Blocked by the master across fork, unblocked once the worker's handlers are set.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1}

HEARTBEAT_EVERY = 1.0
CHECK_EVERY = 1.0
#: How long accepts may fail for lack of descriptors, with few connections of the
#: worker's own, before it asks to be replaced when --timeout is 0 (off).
STARVED_AFTER = 30.0


class Worker:
    """The ``worker`` argument of hooks (gunicorn's attribute names)."""

    def __init__(self, age: int, cfg: Any, ppid: int):
        self.age = age
        self.cfg = cfg
        self.ppid = ppid
        self.pid: Optional[int] = None
        self.log = Log()
        self.booted = False
        self.alive = True
        self.wsgi: Optional[Callable] = None
        # Master-side bookkeeping.
        self.pipe_r = -1
        self.pipe_w = -1
        self.last_beat = time.monotonic()
        self.retiring = False
        self.term_at: Optional[float] = None
        #: Signals the master sent it.
        self.sent: set = set()
        self.replaces: Optional[int] = None

    def __repr__(self) -> str:
        return f"<Worker pid={self.pid} age={self.age}>"


class Request:
    """The ``req`` argument of pre_request/post_request, built from the environ."""

    def __init__(self, environ: dict):
        self.method = environ.get("REQUEST_METHOD", "")
        self.path = environ.get("PATH_INFO", "")
        self.query = environ.get("QUERY_STRING", "")
        self.uri = environ.get("RAW_URI") or (self.path + ("?" + self.query if self.query else ""))
        addr, port = environ.get("REMOTE_ADDR", ""), environ.get("REMOTE_PORT", "")
        #: (host, port) for TCP, "" for a Unix socket, as gunicorn's ``peer_addr``.
        self.peer_addr = self.remote_addr = (addr, int(port)) if port.isdigit() else addr
        self.scheme = environ.get("wsgi.url_scheme", "http")
        proto = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        self.version = tuple(int(x) for x in proto[5:].split(".")) if proto.startswith("HTTP/") else (1, 1)
        self.headers = [(k[5:].replace("_", "-"), v) for k, v in environ.items() if k.startswith("HTTP_")]
        if "CONTENT_TYPE" in environ:
            self.headers.append(("CONTENT-TYPE", environ["CONTENT_TYPE"]))
        if "CONTENT_LENGTH" in environ:
            self.headers.append(("CONTENT-LENGTH", environ["CONTENT_LENGTH"]))


class Response:
    """The ``resp`` argument of post_request."""

    def __init__(self):
        self.status: Optional[str] = None
        self.headers: list = []
        self.sent = 0

    @property
    def status_code(self) -> Optional[int]:
        return int(self.status.split(None, 1)[0]) if self.status else None


class _AfterClose:
    """Iterates the app's response and runs `after` once it is closed."""

    def __init__(self, result, resp: Response, after: Callable[[], None]):
        self._result, self._resp, self._after = result, resp, after

    def __iter__(self):
        for block in self._result:
            self._resp.sent += len(block)
            yield block

    def close(self):
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._after()


def with_request_hooks(app: Callable, worker: Worker, pre, post) -> Callable:
    """Wraps the app only when pre_request or post_request is set, so the fast paths
    (lists, sendfile) stay untouched otherwise. An exception in pre_request fails the
    request (500); one in post_request is logged (gunicorn's handling)."""

    def wrapped(environ, start_response):
        req = Request(environ)
        if pre is not None:
            pre(worker, req)
        resp = Response()

        def sr(status, headers, exc_info=None):
            resp.status, resp.headers = status, headers
            return start_response(status, headers, exc_info)

        result = app(environ, sr)
        if post is None:
            return result

        def after():
            try:
                post(worker, req, environ, resp)
            except Exception:
                worker.log.exception("Exception in post_request hook")

        return _AfterClose(result, resp, after)

    return wrapped


def dump_stacks(log: Log, why: str) -> None:
    """Writes the Python stack of every thread of this process to the error log."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = [why]
    for ident, frame in sys._current_frames().items():
        parts.append(f"Thread {names.get(ident, 'ferrule runner')} ({ident}), most recent call last:")
        parts.append("".join(traceback.format_stack(frame)).rstrip("\n"))
    log.critical("\n".join(parts))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _source_mtimes(extra=()) -> dict:
    out = {}
    paths = [getattr(mod, "__file__", None) for mod in list(sys.modules.values())]
    for path in [p for p in paths if p and p.endswith(".py")] + list(extra):
        try:
            out[path] = os.stat(path).st_mtime
        except OSError:
            pass
    return out


def files_of(exc: BaseException) -> list:
    """The source files an import error points at: a SyntaxError's file and every file
    in the tracebacks (with their causes). A module that failed to import is not in
    sys.modules, so --reload would not see it fixed without these."""
    files, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, SyntaxError) and exc.filename:
            files.append(exc.filename)
        files += [frame.filename for frame in traceback.extract_tb(exc.__traceback__)]
        exc = exc.__cause__ or exc.__context__
    return sorted({f for f in files if os.path.isfile(f)})


def make_fail_app(text: str) -> Callable:
    """gunicorn's --reload error page: every request gets 500 and the traceback."""
    body = text.encode("utf-8", "replace")

    def fail_app(environ, start_response):
        start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8"),
                                                     ("Content-Length", str(len(body)))])
        return [body]

    return fail_app


class Ticker:
    """Called by the serving loop about every 100 ms: heartbeat, parent check, request
    timeout, and the reasons to be replaced. Returns True to stop this worker now.
    `starved` is (seconds, connections, limit) while accepts fail for lack of
    descriptors that the worker's own connections do not explain, else None."""

    def __init__(self, arbiter, worker: Worker, watch=()):
        self.arbiter, self.worker, self.cfg = arbiter, worker, worker.cfg
        #: Files --reload watches beside sys.modules (those a failed import named).
        self.watch = list(watch)
        self.limit = self.cfg.max_requests + random.randint(0, max(self.cfg.max_requests_jitter, 0)) \
            if self.cfg.max_requests > 0 else 0
        self.next_beat = 0.0
        self.next_check = time.monotonic() + CHECK_EVERY
        self.mtimes = _source_mtimes(self.watch) if self.cfg.reload else {}
        self.retiring = False
        self.stopping = False

    def send(self, msg: bytes) -> None:
        try:
            os.write(self.worker.pipe_w, msg)
        except OSError:
            pass

    def retire(self, why: str) -> None:
        if not self.retiring:
            self.retiring = True
            self.worker.log.info(f"Worker {self.worker.pid} asks to be replaced: {why}")
            self.send(b"R")

    def __call__(self, served: int, stalled: Optional[float], starved: Optional[tuple] = None) -> bool:
        if self.stopping:
            return False
        now = time.monotonic()
        if now >= self.next_beat:
            self.next_beat = now + HEARTBEAT_EVERY
            self.send(b".")
        if os.getppid() != self.worker.ppid:
            self.worker.log.info(f"Parent changed, shutting down: {self.worker}")
            self.stopping = True
            return True
        timeout = self.cfg.timeout
        if timeout > 0 and stalled is not None and stalled > timeout:
            dump_stacks(self.worker.log, f"WORKER TIMEOUT (pid:{self.worker.pid}): a request has been stuck in "
                                         f"the app for {stalled:.1f}s (timeout {timeout:g}s); stacks of every thread:")
            self.arbiter.call_hook("worker_abort", self.worker)
            self.retire("request timeout")
            self.stopping = True
            return float(timeout)  # stop, answering 500 to requests stuck longer
        if self.limit and served >= self.limit:
            self.retire(f"max requests ({self.limit}) reached")
        if starved is not None:
            self._check_starved(*starved)
        if now >= self.next_check and not self.retiring:
            self.next_check = now + CHECK_EVERY
            if self.cfg.max_worker_memory > 0:
                rss = _rss_mb()
                if rss > self.cfg.max_worker_memory:
                    self.retire(f"resident memory {rss:.0f} MB over max-worker-memory {self.cfg.max_worker_memory} MB")
            if self.cfg.reload:
                fresh = _source_mtimes(self.watch)
                changed = [p for p, m in fresh.items() if self.mtimes.get(p, m) != m]
                self.mtimes.update(fresh)
                if changed:
                    self.retire(f"{changed[0]} modified")
        return False

    def _check_starved(self, during: float, connections: int, limit: int) -> None:
        """Accepts have been refused for lack of descriptors for `during` seconds while
        the worker's connections hold under half of them: something in the app holds
        the rest (a leak, most likely), and only a fresh process gets them back."""
        after = self.cfg.timeout if self.cfg.timeout > 0 else STARVED_AFTER
        if during > after:
            self.retire(f"out of file descriptors for {during:.0f}s with only {connections} connection(s) "
                        f"open (limit {limit}); the app may be leaking descriptors")


def _switch_user(cfg) -> None:
    """The user and group exist: the master checked them at start-up (cli.check_owner)."""
    if cfg.group is None and cfg.user is None:
        return
    try:
        if cfg.group is not None:
            os.setgid(cfg.gid)
            if os.geteuid() == 0:
                os.setgroups([cfg.gid])
        if cfg.user is not None:
            if cfg.initgroups and os.geteuid() == 0:
                import pwd
                entry = pwd.getpwuid(cfg.uid)
                os.initgroups(entry.pw_name, cfg.gid if cfg.group is not None else entry.pw_gid)
            os.setuid(cfg.uid)
    except (OSError, KeyError) as exc:
        Log().error(f"cannot switch to user {cfg.user} / group {cfg.group}: {exc}")
        raise


def run(arbiter, worker: Worker) -> NoReturn:
    """The child's whole life after fork; never returns."""
    code = 1
    try:
        code = _serve(arbiter, worker)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:
        worker.log.exception(f"Exception in worker process {os.getpid()}")
    finally:
        flush_std()  # a closed stdout must not keep this child from its os._exit
        os._exit(code)


def _serve(arbiter, worker: Worker) -> int:
    worker.pid = os.getpid()
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2, signal.SIGWINCH):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # A stop asked for while booting is remembered and honoured before serving; one
    # asked for while already stopping (a second TERM, the master's TERM after a
    # request timeout) is a no-op, so it cannot cut the stop short and skip worker_exit.
    phase = ["booting"]
    early_stop: list = []

    def graceful(signum, frame):
        if phase[0] == "serving":
            phase[0] = "stopping"
            raise SystemExit(0)
        if phase[0] == "booting":
            early_stop.append(signum)

    def quick(signum, frame):
        if phase[0] == "serving":
            phase[0] = "stopping"
            arbiter.call_hook("worker_int", worker)
            raise KeyboardInterrupt
        if phase[0] == "booting":
            early_stop.append(signum)

    def reopen(signum, frame):
        try:
            _ferrule.reopen_logs()
            if worker.cfg.capture_output:
                daemon.capture_output(worker.cfg.error_logfile)
        except OSError as exc:
            worker.log.error(f"cannot reopen log files: {exc}")

    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGINT, quick)
    signal.signal(signal.SIGQUIT, quick)
    signal.signal(signal.SIGUSR1, reopen)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    arbiter.close_in_child(worker)
    os.set_blocking(worker.pipe_w, False)
    cfg = worker.cfg
    try:
        arbiter.call_hook("post_fork", arbiter, worker, fatal=True)
        _switch_user(cfg)
    except Exception:
        return EXIT_BOOT
    app, watch = arbiter.app, []
    if app is None:
        try:
            app = load_app(cfg.app)
        except Exception as exc:
            if isinstance(exc, AppLoadError):
                worker.log.error(f"cannot load app {cfg.app!r}: {exc}")
            else:
                worker.log.exception(f"cannot load app {cfg.app!r}")
            if not (cfg.reload and _fail_app_helps(arbiter, cfg.app, exc)):
                return EXIT_APP_LOAD
            # --reload: stay up with the error page until a file it names changes.
            watch = files_of(exc)
            app = make_fail_app(f"ferrule: cannot load app {cfg.app!r} (--reload: fix the file and it "
                                f"reloads)\n\n{''.join(traceback.format_exception(exc))}")
            worker.log.info(f"--reload: serving the error page (500) until one of these changes: {watch}")
    pre, post = arbiter.hooks.get("pre_request"), arbiter.hooks.get("post_request")
    if pre is not None or post is not None:
        app = with_request_hooks(app, worker, pre, post)
    worker.wsgi = app
    try:
        arbiter.call_hook("post_worker_init", worker, fatal=True)
    except Exception:
        return EXIT_BOOT

    if early_stop:
        return 0
    ticker = Ticker(arbiter, worker, watch)

    def ready(addresses):
        worker.booted = True
        ticker.send(b"U")

    def tick(served, stalled, starved=None):
        # The ticker's answer passes through: True, or the request timeout (a number:
        # stop, answering 500 to requests stuck longer) both stop the worker.
        stop = ticker(served, stalled, starved)
        if stop:
            phase[0] = "stopping"
        return stop

    # The settings the master checked when this worker was forked, on its sockets.
    core = arbiter.core.inherit([fd for fd, _ in arbiter.listeners])
    clean = False
    try:
        phase[0] = "serving"
        # A stop that came in while the ticker was made: nothing was served yet.
        clean = True if early_stop else _ferrule.serve(app, core, ready, tick, True)
    finally:
        phase[0] = "stopped"
        worker.alive = False
        arbiter.call_hook("worker_exit", arbiter, worker)
    return 0 if clean else 1


def _fail_app_helps(arbiter, target: str, exc: Exception) -> bool:
    """With --reload, whether the error page should be served: always once a worker
    has booted; at start-up only for an error in the app's code, not for a target
    that does not exist (a typo on the command line stops the server, exit 4)."""
    if arbiter._booted_once:
        return True
    if isinstance(exc, AppLoadError):
        return False
    module = target.partition(":")[0]
    return not (isinstance(exc, ModuleNotFoundError) and exc.name == module)
