"""The bench's count of clients a server leaves waiting (bench/bench.py `left_waiting`),
checked against listeners that accept nobody and everybody."""

import itertools
import math
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench  # noqa: E402


class Running:
    """Stands in for the wrk process: still running throughout."""

    def poll(self):
        return None


def no_new_connections():
    """The handshake counter as the bench sees it during a keep-alive run (the real one
    counts the whole machine's connections, and other tests may be making some)."""
    return 7


def test_clients_never_accepted_are_counted():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            assert bench.left_waiting(port, 1, Running(), no_new_connections) == 3
        finally:
            for c in clients:
                c.close()


def test_a_queue_that_never_empties_while_connections_come_is_unknown():
    """Then the clients in the queue may be new ones each time (a server that closes after
    each answer and accepts in turn): the bench cannot tell, and says so."""
    counter = itertools.count()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        try:
            assert math.isnan(bench.left_waiting(port, 1, Running(), lambda: next(counter)))
        finally:
            for c in clients:
                c.close()


def test_nobody_waits_at_a_server_that_accepts():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        accepted = []
        threading.Thread(target=lambda: [accepted.append(listener.accept()[0]) for _ in range(3)],
                         daemon=True).start()
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            assert bench.left_waiting(port, 1, Running(), no_new_connections) == 0
            assert len(accepted) == 3
        finally:
            for s in clients + accepted:
                s.close()


def test_passive_opens_counts_each_handshake():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        before = bench.passive_opens()
        clients = [socket.create_connection(listener.getsockname()) for _ in range(2)]
        try:
            assert bench.passive_opens() - before >= 2
        finally:
            for c in clients:
                c.close()


def test_the_p99_comparison_leaves_out_peers_that_left_clients_waiting():
    r = bench.Result
    results = {("ferrule", "hello"): r(p99_ms=0.8, waiting=0), ("bjoern", "hello"): r(p99_ms=0.9, waiting=0),
               ("uwsgi-t8", "hello"): r(p99_ms=0.4, waiting=42),
               ("gunicorn-sync", "hello"): r(p99_ms=20.0, waiting=float("nan"))}
    line = bench.p99_line(results, bench.SCENARIOS[0], list(bench.SERVERS))
    assert line.startswith("Lowest p99 among the peers that left no client waiting: bjoern 0.90 ms; ferrule 0.80 ms.")
    assert line.endswith("counts only the clients they served): uwsgi-t8.")
