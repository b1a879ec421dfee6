"""The bench's count of clients a server leaves waiting (bench/bench.py `left_waiting`),
checked against listeners that accept nobody and everybody."""

import contextlib
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


@contextlib.contextmanager
def listener_and_clients(n, accept=False):
    """A loopback listener with `n` clients connected; `accept` has a thread accept them.
    Yields the port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        accepted = []
        if accept:
            threading.Thread(target=lambda: [accepted.append(listener.accept()[0]) for _ in range(n)],
                             daemon=True).start()
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
        try:
            yield port
            if accept:
                assert len(accepted) == n
        finally:
            for s in clients + accepted:
                s.close()


def test_clients_never_accepted_are_counted():
    with listener_and_clients(3) as port:
        assert bench.left_waiting(port, 1, Running(), no_new_connections) == 3


def test_a_queue_that_never_empties_while_connections_come_is_unknown():
    """Then the clients in the queue may be new ones each time (a server that closes after
    each answer and accepts in turn): the bench cannot tell, and says so."""
    counter = itertools.count()
    with listener_and_clients(2) as port:
        assert math.isnan(bench.left_waiting(port, 1, Running(), lambda: next(counter)))


def test_nobody_waits_at_a_server_that_accepts():
    with listener_and_clients(3, accept=True) as port:
        assert bench.left_waiting(port, 1, Running(), no_new_connections) == 0


def test_passive_opens_counts_each_handshake():
    before = bench.passive_opens()
    with listener_and_clients(2):
        assert bench.passive_opens() - before >= 2


def test_the_p99_comparison_leaves_out_peers_that_left_clients_waiting():
    r = bench.Result
    results = {("ferrule", "hello"): r(p99_ms=0.8, waiting=0), ("bjoern", "hello"): r(p99_ms=0.9, waiting=0),
               ("uwsgi-t8", "hello"): r(p99_ms=0.4, waiting=42),
               ("gunicorn-sync", "hello"): r(p99_ms=20.0, waiting=float("nan")),
               ("floor", "hello"): r(p99_ms=0.5, waiting=0)}  # a reference, not a peer
    line = bench.p99_line(results, bench.SCENARIOS[0], list(bench.SERVERS))
    assert line.startswith("Lowest p99 among the peers that left no client waiting: bjoern 0.90 ms; ferrule 0.80 ms.")
    assert line.endswith("counts only the clients they served): uwsgi-t8.")


def test_pipelined_runs_have_no_latency_columns():
    pipelined = [sc for sc in bench.SCENARIOS if sc.script == "pipeline.lua"]
    assert pipelined and not any(sc.timed for sc in pipelined)
    line = bench.p99_line({("ferrule", pipelined[0].name): bench.Result(rps=1.0)}, pipelined[0], ["ferrule"])
    assert line.startswith("No latency columns: wrk times one response in each pipelined batch")


def test_the_hello_table_says_what_each_server_spends_above_the_socket_floor():
    r = bench.Result
    hello = bench.SCENARIOS[0]
    results = {("ferrule", "hello"): r(cpu_us=7.5), ("bjoern", "hello"): r(cpu_us=9.0),
               ("floor", "hello"): r(cpu_us=6.0)}
    [line, blank] = bench.floor_lines(results, hello)
    assert "ferrule 1.50 µs a request, bjoern 3.00 µs (0.50×)" in line and blank == ""
    assert line.endswith("0.8× bjoern's CPU is 7.20 µs, 1.20 µs above the floor.")
    assert bench.floor_lines({k: v for k, v in results.items() if k[0] != "floor"}, hello) == []
    # A slow host while the floor ran: no ratio, and the line says why.
    [line, _] = bench.floor_lines({**results, ("floor", "hello"): r(cpu_us=7.7)}, hello)
    assert "ferrule -0.20 µs a request, bjoern 1.30 µs (no ratio)" in line
    assert "the host's speed changed between the rows" in line
