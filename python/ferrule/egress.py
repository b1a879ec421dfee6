"""Egress in a worker (docs/egress.md): turned on after ``post_fork`` and the user
switch, before the app is imported, so everything the app's process sends with an
address is judged and recorded by the Rust supervisor (``crates/ferrule-server/src/egress.rs``).

The Python side adds what only Python knows: which host name the app resolved to
reach an address. ``socket.getaddrinfo`` is wrapped to tell the core each answer
(the record's ``host``); native code that resolves by itself (libpq) is not seen.
"""

from __future__ import annotations

import ipaddress
import socket
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
                    # A literal address is reached by no name: "" forgets the last one.
                    _ferrule.egress_note_host("" if _is_literal(name) else name, addrs)
        except Exception:  # noqa: BLE001 - the name is a nicety; resolving must not fail for it
            pass
        return result

    setattr(getaddrinfo, _WRAPPED, True)
    getaddrinfo.__wrapped__ = real  # type: ignore[attr-defined]
    getaddrinfo.__doc__ = real.__doc__
    socket.getaddrinfo = getaddrinfo


def counts() -> List[Tuple[str, str, int, Optional[str], str, int]]:
    """``(proto, addr, port, host, verdict, count)`` for every destination this process
    tried since egress started, sorted (the metrics hook); empty when egress is off.
    Past 10,000 destinations, new ones are counted under the address ``other``."""
    return _ferrule.egress_counts()
