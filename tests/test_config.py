"""Configuration (mirrors python/ferrule/config.py): config files, hooks, the
CMD_ARGS environment variables, --check-config and --print-config."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import APPS, booted, children, free_port, get, wait_until

HOOKS_FILE = '''
import json, os

bind = "127.0.0.1:{port}"
workers = 2
timeout = 1
graceful_timeout = 1
accesslog = None
helper_value = "not a setting: ignored like gunicorn does"

def _kind(x):
    if hasattr(x, "WORKERS") and hasattr(x, "cfg"):
        return "server"
    if hasattr(x, "age") and hasattr(x, "ppid"):
        return "worker:" + str(x.pid)
    if hasattr(x, "method"):
        return "req:" + x.method + " " + x.path
    if isinstance(x, dict):
        return "environ:" + x.get("PATH_INFO", "")
    if hasattr(x, "status_code"):
        return "resp:" + str(x.status_code)
    return repr(x)

def _record(name, *args):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(json.dumps({{"hook": name, "pid": os.getpid(), "args": [_kind(a) for a in args]}}) + "\\n")

def on_starting(server): _record("on_starting", server)
def on_reload(server): _record("on_reload", server)
def when_ready(server): _record("when_ready", server)
def pre_fork(server, worker): _record("pre_fork", server, worker)
def post_fork(server, worker): _record("post_fork", server, worker)
def post_worker_init(worker): _record("post_worker_init", worker)
def worker_int(worker): _record("worker_int", worker)
def worker_abort(worker): _record("worker_abort", worker)
def pre_request(worker, req): _record("pre_request", worker, req)
def post_request(worker, req, environ, resp): _record("post_request", worker, req, environ, resp)
def child_exit(server, worker): _record("child_exit", server, worker)
def worker_exit(server, worker): _record("worker_exit", server, worker)
def nworkers_changed(server, new_value, old_value): _record("nworkers_changed", server, new_value, old_value)
def on_exit(server): _record("on_exit", server)
'''


def ferrule(*args, cwd=APPS, env=None, timeout=30):
    return subprocess.run([sys.executable, "-m", "ferrule", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


class Started:
    def __init__(self, proc, port):
        self.proc, self.port = proc, port


def test_config_file_sets_values_and_every_hook_gets_the_right_arguments(tmp_path):
    port = free_port()
    conf = tmp_path / "hooks.conf.py"
    conf.write_text(HOOKS_FILE.format(port=port))
    log = tmp_path / "hooks.jsonl"
    errlog = tmp_path / "err.log"
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "proc:app", "-c", str(conf), "--chdir", str(APPS)],
                            env={**os.environ, "HOOK_LOG": str(log)}, stderr=open(errlog, "wb"))
    try:
        s = Started(proc, port)
        wait_until(lambda: len(children(proc.pid)) == 2)
        first = booted(s, 2)
        assert get(port, "/hello")[0] == 200
        proc.send_signal(signal.SIGTTIN)
        booted(s, 3)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: (k := children(proc.pid)) and len(k) == 3 and not set(k) & set(first) and k)
        booted(s, 3)
        try:
            get(port, "/stuck", timeout=3)
        except OSError:
            pass
        wait_until(lambda: '"worker_abort"' in log.read_text())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    by_hook = {}
    for c in calls:
        by_hook.setdefault(c["hook"], []).append(c)
    master = proc.pid
    assert {c["hook"] for c in calls} == {
        "on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init", "worker_int",
        "worker_abort", "pre_request", "post_request", "child_exit", "worker_exit", "nworkers_changed", "on_exit"}
    for name in ("on_starting", "when_ready", "on_reload", "on_exit"):
        assert all(c["pid"] == master and c["args"] == ["server"] for c in by_hook[name]), name
    assert by_hook["nworkers_changed"][0]["args"] == ["server", "3", "2"]
    assert all(c["pid"] == master and c["args"][0] == "server" for c in by_hook["pre_fork"])
    # post_fork and post_worker_init run in the new worker, whose pid the worker object carries.
    for c in by_hook["post_fork"]:
        assert c["pid"] != master and c["args"] == ["server", f"worker:{c['pid']}"]
    for c in by_hook["post_worker_init"] + by_hook["worker_int"] + by_hook["worker_abort"]:
        assert c["args"] == [f"worker:{c['pid']}"]
    hello = [c for c in by_hook["post_request"] if "req:GET /hello" in c["args"]]
    assert hello and hello[0]["args"][1:] == ["req:GET /hello", "environ:/hello", "resp:200"]
    assert any(c["args"][1] == "req:GET /hello" for c in by_hook["pre_request"])
    for c in by_hook["child_exit"]:
        assert c["pid"] == master and c["args"][0] == "server" and c["args"][1].startswith("worker:")
    for c in by_hook["worker_exit"]:
        assert c["pid"] != master and c["args"] == ["server", f"worker:{c['pid']}"]
    assert "helper_value" not in errlog.read_text()


def test_default_config_file_is_read_from_the_working_directory(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("workers = 3\nwsgi_app = 'proc:app'\n")
    r = ferrule("--print-config", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "workers                      = 3" in r.stdout and "'proc:app'" in r.stdout
    (tmp_path / "ferrule.conf.py").write_text("workers = 5\n")
    assert "workers                      = 5" in ferrule("--print-config", cwd=tmp_path).stdout


def test_precedence_is_file_then_env_args_then_command_line(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("workers = 2\nthreads = 7\nkeepalive = 5\n")
    env = {"GUNICORN_CMD_ARGS": "--workers 3 --threads 9"}
    r = ferrule("-c", str(conf), "--threads", "11", "--print-config", env=env)
    out = r.stdout
    assert "workers                      = 3" in out
    assert "threads                      = 11" in out
    assert "keepalive                    = 5.0" in out  # gunicorn's name
    env["FERRULE_CMD_ARGS"] = "--workers 4"
    assert "workers                      = 4" in ferrule("-c", str(conf), "--print-config", env=env).stdout
    assert "workers                      = 6" in ferrule("--print-config", env={"WEB_CONCURRENCY": "6"}).stdout


def test_bad_setting_and_bad_hook_stop_start_up_with_one_line(tmp_path):
    cases = {
        "workers = 'many'\n": "setting 'workers' must be an integer",
        "def when_ready():\n    pass\n": "hook 'when_ready' must accept 1 positional argument",
        "on_exit = 3\n": "hook 'on_exit' must be callable",
        "import no_such_module_here\n": "ModuleNotFoundError",
    }
    for text, words in cases.items():
        conf = tmp_path / "bad.py"
        conf.write_text(text)
        r = ferrule("proc:app", "-c", str(conf))
        assert r.returncode == 2, (text, r.stderr)
        assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = ferrule("proc:app", "-c", str(tmp_path / "missing.py"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_check_config_loads_the_app_and_exits(tmp_path):
    r = ferrule("proc:app", "--check-config")
    assert r.returncode == 0 and "configuration OK" in r.stdout
    r = ferrule("proc:missing", "--check-config")
    assert r.returncode == 4 and "Failed to find attribute" in r.stderr


def test_a_raising_on_starting_hook_stops_start_up_with_its_traceback(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("def on_starting(server):\n    raise RuntimeError('refusing to start')\n")
    r = ferrule("proc:app", "-c", str(conf), "-b", f"127.0.0.1:{free_port()}")
    assert r.returncode == 1
    assert "Exception in on_starting hook" in r.stderr and "refusing to start" in r.stderr


def test_a_raising_post_request_hook_is_logged_and_the_response_is_kept(tmp_path):
    port = free_port()
    conf = tmp_path / "c.py"
    conf.write_text(f"bind = '127.0.0.1:{port}'\n"
                    "def post_request(worker, req, environ, resp):\n    raise ValueError('hook broke')\n")
    errlog = tmp_path / "err.log"
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "proc:app", "-c", str(conf), "--chdir", str(APPS)],
                            stderr=open(errlog, "wb"))
    try:
        booted(Started(proc, port), 1)
        assert get(port, "/")[0] == 200
        wait_until(lambda: "Exception in post_request hook" in errlog.read_text())
        assert "hook broke" in errlog.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_systemd_socket_activation_and_notify(tmp_path):
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(15)
    fd = listener.fileno()
    # systemd passes sockets from descriptor 3 and names the server's pid in LISTEN_PID:
    # bash moves the socket to 3, sets LISTEN_PID to its own pid, then execs the server.
    cmd = (f"exec 3<&{fd} {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec {sys.executable} -m ferrule proc:app "
           f"--chdir {APPS}")
    proc = subprocess.Popen(["bash", "-c", cmd], pass_fds=(fd,),
                            env={**os.environ, "NOTIFY_SOCKET": notify_path}, stderr=open(tmp_path / "err", "wb"))
    listener.close()
    try:
        assert notify.recv(1024).startswith(b"READY=1")
        assert get(port, "/")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(1024) == b"STOPPING=1"
        assert proc.wait(timeout=15) == 0
        assert "from systemd (LISTEN_FDS)" in (tmp_path / "err").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()


def test_fd_bind_serves_an_inherited_socket(tmp_path):
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port, fd = listener.getsockname()[1], listener.fileno()
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "proc:app", "--chdir", str(APPS),
                             "-b", f"fd://{fd}"], pass_fds=(fd,), stderr=subprocess.DEVNULL)
    listener.close()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                assert get(port, "/")[0] == 200
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("no answer on the inherited socket")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    r = ferrule("proc:app", "-b", "fd://99")
    assert r.returncode == 3 and "fd://99" in r.stderr



@pytest.mark.parametrize("how", ["systemd", "fd"])
def test_a_handed_in_unix_socket_is_left_in_place_at_exit(tmp_path, how):
    # systemd's socket unit keeps listening on the path across service restarts, so the
    # server must not remove it (gunicorn does not either); only paths it bound itself.
    import socket
    path = tmp_path / "handed.sock"
    own = tmp_path / "own.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(16)
    fd = listener.fileno()
    if how == "systemd":
        cmd = (f"exec 3<&{fd} {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec {sys.executable} -m ferrule proc:app "
               f"--chdir {APPS}")
    else:
        cmd = f"exec {sys.executable} -m ferrule proc:app --chdir {APPS} -b fd://{fd} -b unix:{own}"
    proc = subprocess.Popen(["bash", "-c", cmd], pass_fds=(fd,), stderr=open(tmp_path / "err", "wb"))
    listener.close()
    try:
        deadline = time.monotonic() + 15
        while "Booting worker" not in (tmp_path / "err").read_text():
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "err").read_text()
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(10)
            c.connect(str(path))
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert c.recv(64).startswith(b"HTTP/1.0 200")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert path.exists()
    assert not own.exists()

def test_hup_with_a_bad_value_keeps_the_running_configuration_and_workers(tmp_path):
    # A value only the Rust core checks (threads >= 1) must be caught by the master on
    # HUP, not by each new worker, which would fail to start.
    port = free_port()
    conf = tmp_path / "reload.conf.py"
    good = f'bind = "127.0.0.1:{port}"\nworkers = 1\ngraceful_timeout = 1\n'
    conf.write_text(good)
    errlog = tmp_path / "err.log"
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "proc:app", "-c", str(conf), "--chdir", str(APPS)],
                            stderr=open(errlog, "wb"))
    try:
        s = Started(proc, port)
        first = booted(s, 1)
        conf.write_text(good + "threads = 0\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "configuration not reloaded" in errlog.read_text())
        assert "threads must be an integer >= 1 (got 0)" in errlog.read_text()
        # The worker is still replaced (a HUP reloads the app's code), with the old settings.
        second = wait_until(lambda: (k := children(proc.pid)) and len(k) == 1 and k != first and k)
        assert booted(s, 1) == second
        conf.write_text(good + "threads = 4\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: (k := children(proc.pid)) and len(k) == 1 and k != second)
        booted(s, 1)
        assert "ConfigError" not in errlog.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_core_checks_settings_into_a_config_and_inherit_needs_descriptors():
    from ferrule import _ferrule
    from ferrule.settings import Settings
    good = Settings().as_dict()
    for key, value, message in (("threads", 0, "threads must be an integer >= 1 (got 0)"),
                                ("header_map", "keep", "header-map must be one of drop, refuse, dangerous"),
                                ("access_logfile", "-", None)):
        settings = {**good, key: value}
        if message is None:
            assert isinstance(_ferrule.Config(settings), _ferrule.Config)
            continue
        try:
            _ferrule.Config(settings)
        except _ferrule.ConfigError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"{key}={value!r} was accepted")
    try:
        _ferrule.Config(good).inherit([])
    except _ferrule.ConfigError as exc:
        assert "no listening descriptor" in str(exc)
    else:
        raise AssertionError("inherit([]) was accepted")
