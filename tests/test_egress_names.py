"""The Python half of egress's `host` (python/ferrule/egress.py): which name the core is
told for an address, whatever way the app reaches it. The core is replaced by a recorder,
so nothing is installed and only loopback is touched."""

import socket

import pytest

from ferrule import egress


class Recorder:
    def __init__(self):
        self.calls = []

    def egress_note_host(self, name, addrs):
        self.calls.append((name, sorted(set(addrs))))


@pytest.fixture
def told(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(egress, "_ferrule", rec)
    for name in ("getaddrinfo",):
        monkeypatch.setattr(socket, name, getattr(socket, name))
    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, getattr(socket.socket, name))
    egress._last.answer = None
    egress._wrap_getaddrinfo()
    return rec.calls


@pytest.fixture
def port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_a_name_resolved_by_create_connection_is_told(told, port):
    socket.create_connection(("localhost", port)).close()
    assert told[0][0] == "localhost" and "127.0.0.1" in told[0][1]
    assert all(name == "localhost" for name, _ in told)


def test_a_name_given_to_connect_is_resolved_through_the_wrapper(told, port):
    with socket.socket() as s:
        s.connect(("localhost", port))
    assert [name for name, _ in told] == ["localhost"]


def test_a_literal_forgets_the_name_unless_it_is_the_last_lookups_answer(told, port):
    socket.create_connection(("localhost", port)).close()
    told.clear()
    with socket.socket() as s:
        s.connect(("127.0.0.1", port))
    assert told == [("", ["127.0.0.1"])]


def test_udp_sendto_with_a_name_and_with_a_literal(told):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        me = u.getsockname()[1]
        u.sendto(b"x", ("localhost", me))
        u.sendto(b"y", 0, ("127.0.0.1", me))
        assert u.recv(10) + u.recv(10) == b"xy"
    assert [name for name, _ in told] == ["localhost", ""]


def test_unix_sockets_and_bad_addresses_pass_through(told, tmp_path):
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as listener, socket.socket(socket.AF_UNIX) as s:
        listener.bind(path)
        listener.listen(1)
        s.connect(path)
    with socket.socket() as s, pytest.raises(TypeError):
        s.connect("not a tuple")
    assert told == []


def test_wrapping_twice_wraps_once(told):
    first = socket.getaddrinfo
    egress._wrap_getaddrinfo()
    assert socket.getaddrinfo is first
