"""The bench's count of clients a server leaves waiting (bench/bench.py `left_waiting`),
checked against listeners that accept nobody and everybody."""

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


def test_clients_never_accepted_are_counted():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            assert bench.left_waiting(port, 1, Running()) == 3
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
            assert bench.left_waiting(port, 1, Running()) == 0
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
