"""gunicorn's binary upgrade (USR2, WINCH, TERM to the old master) with real masters,
real workers, real signals and load from keep-alive and new-connection clients. Every
load loop is bounded in count and time."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import children, free_port, read_response, serving, wait_until

APP_V1 = """import os

def app(environ, start_response):
    body = ("v1 %d" % os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def alive(pid):
    """Running, not a zombie (an orphaned master is reaped by whoever adopts it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pid_in(path):
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


class Masters:
    """A ferrule started in its own session, with a pid file, a TCP and a unix socket,
    serving app.py from a directory the test edits. Cleanup kills the whole process
    group: the new master of an upgrade is not our child."""

    def __init__(self, tmp: Path, *args, env=None, workers=2):
        self.tmp = tmp
        (tmp / "app.py").write_text(APP_V1)
        self.port = free_port()
        self.sock = tmp / "s.sock"
        self.pidfile = tmp / "ferrule.pid"
        self.errlog = tmp / "err.log"
        cmd = [sys.executable, "-m", "ferrule", "app:app", "--chdir", str(tmp), "-w", str(workers),
               "-b", f"127.0.0.1:{self.port}", "-b", f"unix:{self.sock}", "--pid", str(self.pidfile), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.errlog, "wb"),
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        self.workers = workers
        self.pgid = self.proc.pid

    def log(self):
        return self.errlog.read_text(errors="replace")

    def booted(self, master, n=None):
        """Waits until `master` has n serving workers (the new master is a child of
        the old one but never serves); returns their pids."""
        n = self.workers if n is None else n

        def ready():
            kids = [k for k in children(master) if serving(k)]
            return len(kids) == n and kids
        return wait_until(ready, timeout=20)

    def kill(self):
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


@pytest.fixture
def masters(tmp_path):
    started = []

    def start(*args, **kw):
        m = Masters(tmp_path, *args, **kw)
        started.append(m)
        return m

    yield start
    for m in started:
        m.kill()


def get_tcp(port, timeout=10.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", "/", headers={"Connection": "close"})
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def get_unix(path, timeout=10.0):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, body = read_response(s)
        return status, body.decode()


class MixedLoad:
    """Keep-alive clients (one connection for many requests, a new one after a
    `Connection: close`), new-connection clients on TCP, and one on the unix socket;
    at most `limit` requests and `seconds` in all."""

    def __init__(self, port, sock, limit=40000, seconds=60.0):
        self.port, self.sock, self.limit = port, sock, limit
        self.deadline = time.monotonic() + seconds
        self.ok = 0
        self.bodies = set()
        self.failed = []
        self.stopping = False
        self.lock = threading.Lock()
        targets = [self._keepalive] * 2 + [self._fresh] * 2 + [self._unix]
        self.threads = [threading.Thread(target=t, daemon=True, name=f"{t.__name__[1:]}-{i}")
                        for i, t in enumerate(targets)]
        for t in self.threads:
            t.start()

    def _go(self):
        with self.lock:
            return not self.stopping and time.monotonic() < self.deadline and self.ok + len(self.failed) < self.limit

    def _count(self, status, body):
        with self.lock:
            if status == 200:
                self.ok += 1
                self.bodies.add(body.split()[0])
            else:
                self.failed.append(f"{threading.current_thread().name}: {status} {body[:200]!r}")

    def _fail(self, exc):
        with self.lock:
            self.failed.append(f"{threading.current_thread().name}: {exc!r}")

    def _keepalive(self):
        conn = None
        while self._go():
            try:
                if conn is None:
                    conn = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        raise ConnectionError(f"closed after {data!r}")
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed mid-body")
                    body += chunk
                self._count(int(head.split()[1]), body.decode())
                if b"connection: close" in head.lower():
                    conn.close()
                    conn = None
            except Exception as exc:  # noqa: BLE001 - every failure counts
                self._fail(exc)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _fresh(self):
        while self._go():
            try:
                self._count(*get_tcp(self.port))
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)

    def _unix(self):
        while self._go():
            try:
                self._count(*get_unix(self.sock))
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)

    def wait_for(self, n):
        before = self.ok
        wait_until(lambda: self.ok >= before + n, timeout=30)

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join(timeout=30)
        return self


class NotifySocket:
    """A NOTIFY_SOCKET that records (sender pid, message), as systemd sees them."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        ucred = 12  # struct ucred: pid, uid, gid
        while not self.stopping:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(ucred))
            except socket.timeout:
                continue
            pid = next((int.from_bytes(d[:4], sys.byteorder) for level, kind, d in anc
                        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), None)
            self.messages.append((pid, data.decode()))

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def test_usr2_upgrade_under_load_with_no_failed_request(masters, tmp_path):
    marker = tmp_path / "pre_exec.txt"
    conf = tmp_path / "conf.py"
    conf.write_text("import os\n"
                    f"def pre_exec(server):\n    open({str(marker)!r}, 'a').write('%d %d\\n' % (os.getpid(), server.pid))\n")
    notify = NotifySocket(tmp_path / "notify")
    m = masters("-c", str(conf), env={"NOTIFY_SOCKET": notify.path})
    try:
        old = m.proc.pid
        old_workers = m.booted(old)
        assert pid_in(m.pidfile) == old
        load = MixedLoad(m.port, m.sock)
        load.wait_for(300)
        # New code between start and USR2: the new master must serve it.
        (tmp_path / "app.py").write_text(APP_V1.replace('"v1 %d"', '"v2 %d"'))
        os.kill(old, signal.SIGUSR2)
        new = wait_until(lambda: (p := pid_in(m.pidfile)) not in (None, old) and p)
        assert pid_in(Path(str(m.pidfile) + ".oldbin")) == old
        assert marker.read_text() == f"{new} {old}\n"  # pre_exec ran in the child that became it
        new_workers = m.booted(new)
        # Both masters serve: a second USR2 to either is ignored with a log line.
        os.kill(old, signal.SIGUSR2)
        os.kill(new, signal.SIGUSR2)
        wait_until(lambda: "USR2 ignored: an upgrade is in progress" in m.log()
                   and "USR2 ignored: this master is the new one" in m.log())
        assert children(old) == sorted(old_workers + [new])
        load.wait_for(300)
        # WINCH: the old master's workers stop gracefully, the master stays.
        os.kill(old, signal.SIGWINCH)
        wait_until(lambda: children(old) == [new])
        assert alive(old)
        load.wait_for(300)
        assert "v2" in load.bodies
        # TERM to the old master finishes the swap.
        os.kill(old, signal.SIGTERM)
        assert m.proc.wait(timeout=30) == 0
        load.wait_for(300)
        load.stop()
        assert [f for f in load.failed if not f.startswith("keepalive")] == [], load.failed[:10]
        assert pid_in(m.pidfile) == new and not Path(str(m.pidfile) + ".oldbin").exists()
        assert m.sock.exists() and get_unix(m.sock)[1].startswith("v2 ")
        assert get_tcp(m.port)[1].split()[1] in map(str, new_workers)
        assert alive(new) and all(alive(w) for w in new_workers)
        wait_until(lambda: f"Master has been promoted: the old master (pid {old}) has exited" in m.log())
        log = m.log()
        assert f"Worker (pid:{new})" not in log and f"Worker exiting (pid: {new})" not in log
        # systemd: the old master hands MAINPID over instead of saying STOPPING=1.
        from_old = [msg for pid, msg in notify.messages if pid == old]
        assert any(msg.startswith(f"MAINPID={new}") for msg in from_old), notify.messages
        assert not any("STOPPING=1" in msg for msg in from_old), notify.messages
        assert any("READY=1" in msg and f"MAINPID={new}" in msg for pid, msg in notify.messages if pid == new)
        # The new master alone now: its TERM removes the pid file and the socket file.
        os.kill(new, signal.SIGTERM)
        wait_until(lambda: not alive(new), timeout=30)
        assert not m.pidfile.exists() and not m.sock.exists()
        # Keep-alive connections of the old workers must be drained without losing a
        # request (answered with `Connection: close`, closed only when safe): the
        # graceful stop of issue 20 point 4, which WINCH and TERM use.
        assert load.failed == [], load.failed[:10]
    finally:
        notify.close()


def test_a_new_master_that_fails_leaves_the_old_one_serving_with_its_pid_file(masters, tmp_path):
    m = masters()
    old = m.proc.pid
    old_workers = m.booted(old)
    # A bad deploy: the new master cannot load the app and exits 4.
    (tmp_path / "app.py").write_text("def app(:\n")
    os.kill(old, signal.SIGUSR2)
    wait_until(lambda: "The new master (pid" in m.log() and "exited with code 4" in m.log(), timeout=30)
    assert pid_in(m.pidfile) == old and not Path(str(m.pidfile) + ".oldbin").exists()
    assert children(old) == old_workers
    assert get_tcp(m.port)[1].startswith("v1 ") and get_unix(m.sock)[1].startswith("v1 ")
    # The upgrade can be tried again once the app is fixed.
    (tmp_path / "app.py").write_text(APP_V1.replace('"v1 %d"', '"v2 %d"'))
    os.kill(old, signal.SIGUSR2)
    new = wait_until(lambda: (p := pid_in(m.pidfile)) not in (None, old) and p)
    m.booted(new)
    os.kill(old, signal.SIGTERM)
    assert m.proc.wait(timeout=30) == 0
    assert get_tcp(m.port)[1].startswith("v2 ") and get_unix(m.sock)[1].startswith("v2 ")


def test_rollback_after_winch_brings_the_old_workers_back(masters, tmp_path):
    m = masters()
    old = m.proc.pid
    m.booted(old)
    os.kill(old, signal.SIGUSR2)
    new = wait_until(lambda: (p := pid_in(m.pidfile)) not in (None, old) and p)
    m.booted(new)
    os.kill(old, signal.SIGWINCH)
    wait_until(lambda: children(old) == [new])
    # Roll back: the new master is stopped; the old one takes its pid file back and
    # starts its workers again; the socket file stays.
    os.kill(new, signal.SIGTERM)
    wait_until(lambda: pid_in(m.pidfile) == old, timeout=30)
    assert not Path(str(m.pidfile) + ".oldbin").exists()
    m.booted(old)
    assert m.sock.exists() and get_unix(m.sock)[1].startswith("v1 ")
    assert get_tcp(m.port)[0] == 200
    assert "Number of workers: 0 -> 2" in m.log()


def test_winch_without_an_upgrade_is_ignored(masters):
    m = masters(workers=1)
    workers = m.booted(m.proc.pid)
    os.kill(m.proc.pid, signal.SIGWINCH)
    wait_until(lambda: "WINCH ignored: no upgrade in progress" in m.log())
    assert children(m.proc.pid) == workers and get_tcp(m.port)[0] == 200


def test_gunicorn_fd_hands_a_socket_to_a_fresh_master(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    (tmp_path / "app.py").write_text(APP_V1)
    fd = listener.fileno()
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "app:app", "--chdir", str(tmp_path),
                             "-b", "127.0.0.1:1"],  # not bound: the passed socket is used instead
                            env={**os.environ, "GUNICORN_FD": str(fd)}, pass_fds=[fd],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: children(proc.pid) and all(serving(k) for k in children(proc.pid)))
        assert get_tcp(port)[1].startswith("v1 ")
    finally:
        listener.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert "socket(s) passed in FERRULE_FD/GUNICORN_FD" in proc.stderr.read()


def test_a_bad_ferrule_fd_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ferrule", "app:app", "-b", f"127.0.0.1:{free_port()}"],
                       env={**os.environ, "FERRULE_FD": "three"}, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == \
        "ferrule: error: FERRULE_FD='three': expected comma-separated descriptor numbers"


def test_usr2_under_daemon_keeps_the_new_master_detached_once(tmp_path):
    """A re-executed master does not daemonize again: if it did, its first process
    would exit at once and the old master would take the pid file back."""
    (tmp_path / "app.py").write_text(APP_V1)
    port, pidfile = free_port(), tmp_path / "ferrule.pid"
    oldbin = tmp_path / "ferrule.pid.oldbin"
    cmd = [sys.executable, "-m", "ferrule", "app:app", "--chdir", str(tmp_path), "--daemon",
           "-b", f"127.0.0.1:{port}", "--pid", str(pidfile), "--error-logfile", str(tmp_path / "err.log")]
    assert subprocess.run(cmd, timeout=30).returncode == 0
    old = pid_in(pidfile)
    new = None
    try:
        os.kill(old, signal.SIGUSR2)
        new = wait_until(lambda: (p := pid_in(pidfile)) not in (None, old) and p, timeout=20)
        assert pid_in(oldbin) == old
        wait_until(lambda: any(serving(k) for k in children(new)), timeout=20)
        time.sleep(1.5)  # the old master would have renamed oldbin back by now
        assert pid_in(pidfile) == new and pid_in(oldbin) == old and alive(new)
        os.kill(old, signal.SIGTERM)
        wait_until(lambda: not alive(old), timeout=20)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[0] == 200
    finally:
        for pid in (old, new):
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
