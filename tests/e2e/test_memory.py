"""Idle memory after bursts of connections: the worker's resident memory comes back
to where it was once a burst is over (glibc keeps the freed connection buffers in its
arenas otherwise; docs/ARCHITECTURE.md, "Memory after a burst")."""

import resource
import subprocess
import time
from pathlib import Path

import pytest

from conftest import children, get, serving, wait_until

CONNECTIONS = 2000


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def threads(pid):
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def burst(port, connections, seconds, path="/hello"):
    """`connections` keep-alive clients asking for `path` for `seconds`."""
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=seconds + 30)
    assert out.returncode == 0, out.stderr
    assert "Requests/sec" in out.stdout, out.stdout


@pytest.fixture
def many_fds():
    """wrk, started from here, holds a socket per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = CONNECTIONS + 100
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the test needs {need} descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def idle_rss(pid, limit, seconds=6.0):
    """The worker's RSS once it is at most `limit`, or its lowest in `seconds`."""
    deadline = time.monotonic() + seconds
    low = rss_mb(pid)
    while low > limit and time.monotonic() < deadline:
        time.sleep(0.25)
        low = min(low, rss_mb(pid))
    return low


def test_idle_memory_comes_back_after_bursts_of_connections(serve, many_fds):
    s = serve("routes:app", "-w", "1", "--backlog", "4096")
    [worker] = wait_until(lambda: [k for k in children(s.proc.pid) if serving(k)])
    burst(s.port, 50, 1)  # warm-up: the app, the interpreter, the first buffers
    start = idle_rss(worker, 0, seconds=2.5)
    limit = start * 1.2 + 2
    after = []
    for _ in range(3):
        burst(s.port, CONNECTIONS, 2)
        after.append(round(idle_rss(worker, limit), 1))
        assert after[-1] <= limit, f"idle RSS {start:.1f} MB after the warm-up, then {after} MB after bursts"
    assert get(s.port, "/hello")[0] == 200


def test_threads_a_blocking_burst_needed_end_and_their_memory_comes_back(serve, many_fds):
    """A sleeping app takes a thread per request in flight; once the burst is over those
    threads end (after 10 s idle) and what they held is returned."""
    s = serve("routes:app", "-w", "1", "--backlog", "4096", "--threads", "256")
    [worker] = wait_until(lambda: [k for k in children(s.proc.pid) if serving(k)])
    burst(s.port, 50, 1)
    start = idle_rss(worker, 0, seconds=2.5)
    before = threads(worker)
    limit = start * 1.2 + 2
    burst(s.port, 1000, 2, "/sleep?0.05")
    busy = threads(worker)
    assert busy > 100, f"the burst used only {busy} threads"
    wait_until(lambda: threads(worker) <= before, timeout=25, step=0.5)
    rss = idle_rss(worker, limit)
    assert rss <= limit, f"idle RSS {start:.1f} MB before, {rss:.1f} MB after the burst ({busy} threads)"
    assert get(s.port, "/hello")[0] == 200
