"""Egress in a worker (docs/egress.md): turned on after ``post_fork`` and the user
switch, before the app is imported, so everything the app's process sends with an
address is judged and recorded by the Rust supervisor (``crates/ferrule-server/src/egress.rs``).

The Python side adds what only Python knows: which host name the app resolved to
reach an address. ``socket.getaddrinfo`` is wrapped to tell the core each answer
(the record's ``host``), and ``socket.socket``'s ``connect``, ``connect_ex`` and
``sendto`` resolve a name they are given through it (as their C code would), and
make a literal address forget its name. Native code that resolves by itself (libpq)
is not seen: its attempts carry the name last resolved to that address, if any.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any, List, Optional, Tuple

from ferrule import _ferrule

#: Marks the wrapper, so a second start (``ferrule.run`` twice) does not wrap it again.
_WRAPPED = "_ferrule_egress"


def start(core: Any, settings: Any) -> Optional[int]:
    """Turns egress on in this process when ``settings`` ask for it; the number of
    rules, or None (egress off: nothing installed, nothing paid). Raises ConfigError,
    EgressLogError or OSError (the filter cannot be installed)."""
    rules = _ferrule.egress_start(core)
    if rules is None:
        return None
    _wrap_getaddrinfo()
    where = {None: "none", "-": "stdout"}.get(settings.egress_log, settings.egress_log)
    _ferrule.log_message("info", f"Egress on: log {where}, {rules} rule(s)")
    return rules


def _is_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return True


#: This thread's last answer from ``getaddrinfo``: (name, addresses).
_last = threading.local()


def _wrap_getaddrinfo() -> None:
    real = socket.getaddrinfo
    if getattr(real, _WRAPPED, False):
        return

    def getaddrinfo(host, port, *args, **kwargs):
        result = real(host, port, *args, **kwargs)
        try:
            name = host.decode("idna") if isinstance(host, bytes) else host
            if isinstance(name, str) and name:
                addrs = [ai[4][0] for ai in result if ai[0] in (socket.AF_INET, socket.AF_INET6)]
                if addrs:
                    literal = _is_literal(name)
                    _last.answer = (None if literal else name, frozenset(addrs))
                    # A literal address is reached by no name: "" forgets the last one.
                    _ferrule.egress_note_host("" if literal else name, addrs)
        except Exception:  # noqa: BLE001 - the name is a nicety; resolving must not fail for it
            pass
        return result

    setattr(getaddrinfo, _WRAPPED, True)
    getaddrinfo.__wrapped__ = real  # type: ignore[attr-defined]
    getaddrinfo.__doc__ = real.__doc__
    socket.getaddrinfo = getaddrinfo
    _wrap_socket_methods()


def _through_names(sock: socket.socket, address: Any) -> Any:
    """What ``connect``/``sendto`` would reach: a name is resolved here, through the
    wrapper (as the C code would, first answer of the socket's family), so the
    record knows it; a literal that is not the answer of this thread's last lookup
    forgets its name."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple) \
            or len(address) < 2 or not isinstance(address[0], str):
        return address
    host = address[0]
    if host in ("", "<broadcast>"):
        return address
    if not _is_literal(host):
        resolved = socket.getaddrinfo(host, address[1], sock.family)[0][4]
        _last.answer = None
        return resolved
    # Each lookup names one use (create_connection: its first connect).
    answer, _last.answer = getattr(_last, "answer", None), None
    if answer is None or answer[0] is None or host not in answer[1]:
        _ferrule.egress_note_host("", [host])
    return address


def _wrap_socket_methods() -> None:
    cls = socket.socket
    connect, connect_ex, sendto = cls.connect, cls.connect_ex, cls.sendto

    def egress_connect(self, address):
        return connect(self, _through_names(self, address))

    def egress_connect_ex(self, address):
        return connect_ex(self, _through_names(self, address))

    def egress_sendto(self, data, *rest):
        if rest:
            rest = (*rest[:-1], _through_names(self, rest[-1]))
        return sendto(self, data, *rest)

    for name, fn, orig in (("connect", egress_connect, connect), ("connect_ex", egress_connect_ex, connect_ex),
                           ("sendto", egress_sendto, sendto)):
        fn.__doc__, fn.__name__ = orig.__doc__, name
        setattr(cls, name, fn)


def counts() -> List[Tuple[str, str, int, Optional[str], str, int]]:
    """``(proto, addr, port, host, verdict, count)`` for every destination this process
    tried since egress started, sorted (the metrics hook); empty when egress is off.
    Past 10,000 destinations, new ones are counted under the address ``other``."""
    return _ferrule.egress_counts()
