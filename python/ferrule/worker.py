"""A worker process: what runs after the master forks. It loads the app (unless the
master preloaded it), serves on the inherited sockets, and keeps the master informed
over a pipe: ``.`` heartbeat, ``U`` accepting, ``R`` please replace me (max-requests,
memory, timeout, changed source files)."""

from __future__ import annotations

import os
import signal
import traceback
from typing import Callable, NoReturn

from ferrule import _ferrule, daemon, egress, logconfig, metrics
from ferrule.hooks import Request, Response, Worker, with_request_hooks  # noqa: F401 (req, resp: still here)
from ferrule.loader import AppLoadError, load_app
from ferrule.log import Log, flush_std
from ferrule.ticker import Ticker

#: Exit codes the master understands: the app could not be imported / a boot hook failed.
EXIT_APP_LOAD = 4
EXIT_BOOT = 3

#: Blocked by the master across fork, unblocked once the worker's handlers are set.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1}


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
        logconfig.drain_now()  # the last error records (Python logging config) before os._exit
        flush_std()  # a closed stdout must not keep this child from its os._exit
        _ferrule.finish_syslog()  # its sender thread ends with the process
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
    metrics.attach(worker)
    os.set_blocking(worker.pipe_w, False)
    cfg = worker.cfg
    try:
        arbiter.call_hook("post_fork", arbiter, worker, fatal=True)
        _switch_user(cfg)
    except Exception:
        return EXIT_BOOT
    try:
        # Before the app is imported: its import-time connects are judged too (with
        # --preload the master imported it, unfiltered). A HUP's workers read the new rules.
        egress.start(arbiter.core, cfg)
    except (ValueError, OSError) as exc:
        worker.log.error(f"egress: {exc}")
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
