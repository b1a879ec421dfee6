"""Out of file descriptors: the soft limit is raised to the hard one at start-up; a
worker at its limit stops polling the listener for a moment instead of spinning,
logs a bounded number of lines, keeps serving its connections, and a worker whose
app leaks every descriptor is replaced."""

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import APPS, children, free_port, get, serving, wait_for_port, wait_until

HELLO = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"


class Limited:
    """A ferrule master started with RLIMIT_NOFILE (soft, hard)."""

    def __init__(self, tmp: Path, soft: int, hard: int, *args: str):
        self.port = free_port()
        self.errlog = tmp / "err.log"

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        cmd = [sys.executable, "-m", "ferrule", "fd_app:app", "--chdir", str(APPS),
               "-b", f"127.0.0.1:{self.port}", "-w", "1", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.errlog, "wb"),
                                     preexec_fn=limit)
        wait_for_port(self.port, self.proc)
        self.worker = wait_until(lambda: [k for k in children(self.proc.pid) if serving(k)])[0]

    def log(self) -> str:
        return self.errlog.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def limited(tmp_path):
    started = []

    def start(soft, hard, *args):
        s = Limited(tmp_path, soft, hard, *args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def open_files_limit(pid):
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no Max open files line")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def response(sock, timeout=5.0):
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def many_fds():
    """This test process holds 400+ sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the test needs 1024 descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1024), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def hard_limit_at_least(n):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f"the test needs a hard descriptor limit of {n}, it is {hard}")


def test_the_soft_limit_is_raised_to_the_hard_one_at_start_up(limited):
    hard_limit_at_least(1024)
    s = limited(256, 1024)
    assert open_files_limit(s.proc.pid) == (1024, 1024)
    assert open_files_limit(s.worker) == (1024, 1024)
    assert get(s.port, "/hello")[0] == 200


def test_the_soft_limit_is_raised_by_ferrule_run(tmp_path):
    hard_limit_at_least(1024)
    port = free_port()
    code = ("import ferrule, sys; sys.path.insert(0, sys.argv[1]); import fd_app; "
            f"ferrule.run(fd_app.app, bind='127.0.0.1:{port}')")

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))

    p = subprocess.Popen([sys.executable, "-c", code, str(APPS)], stderr=subprocess.DEVNULL, preexec_fn=limit)
    try:
        wait_for_port(port, p)
        assert open_files_limit(p.pid) == (1024, 1024)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(15)


def test_out_of_descriptors_the_worker_backs_off_and_serves_its_connections(limited, many_fds):
    s = limited(256, 256)
    clients = []
    try:
        for _ in range(400):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            c.sendall(HELLO)
            clients.append(c)
        # The first ones are served; the rest wait in the backlog.
        assert b" 200 " in response(clients[0]).split(b"\r\n")[0]
        time.sleep(1)  # the worker reaches its limit
        before, t0 = cpu_seconds(s.worker), time.monotonic()
        time.sleep(3)
        used = (cpu_seconds(s.worker) - before) / (time.monotonic() - t0)
        assert used < 0.5, f"the worker used {used:.0%} of a CPU while out of descriptors"
        # A connection it holds is still served.
        clients[0].sendall(HELLO)
        assert b" 200 " in response(clients[0]).split(b"\r\n")[0]
        lines = s.log().splitlines()
        errors = [line for line in lines if "[ERROR]" in line]
        assert len(lines) < 20 and len(errors) <= 2, f"{len(lines)} log lines:\n" + "\n".join(lines[-5:])
        assert "cannot accept connections: Too many open files" in errors[0], errors
        assert "(file descriptor limit: 256)" in errors[0], errors
    finally:
        for c in clients:
            c.close()
    # Once the clients leave, new connections are served as before.
    wait_until(lambda: get(s.port, "/hello", timeout=2)[0] == 200, timeout=15)
    for _ in range(20):
        assert get(s.port, "/hello")[0] == 200
    assert s.proc.poll() is None and children(s.proc.pid) == [s.worker], "the worker was replaced"


def test_a_worker_whose_app_leaks_every_descriptor_is_replaced(limited):
    s = limited(256, 256, "--timeout", "3")
    status, body = get(s.port, "/leak")
    assert status == 200 and body.startswith("leaked "), body
    time.sleep(0.5)  # the leak takes the descriptor that connection freed too
    # Its listener now refuses: the request waits in the backlog until a new worker takes it.
    status, body = get(s.port, "/hello", timeout=30)
    assert status == 200 and body != f"hello from {s.worker}", body
    log = s.log()
    assert f"Worker {s.worker} asks to be replaced: out of file descriptors" in log, log
    assert "the app may be leaking descriptors" in log
    wait_until(lambda: s.worker not in children(s.proc.pid), timeout=20)
