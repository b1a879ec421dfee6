"""systemd integration: socket activation (``LISTEN_FDS``) and readiness
notification (``NOTIFY_SOCKET``), both without libsystemd."""

from __future__ import annotations

import os
import socket
from typing import List

#: The first descriptor systemd passes (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3


def listen_fds() -> List[int]:
    """The listening descriptors systemd passed to this process, or none. The
    variables are removed so worker processes do not take them for their own."""
    fds = os.environ.pop("LISTEN_FDS", None)
    pid = os.environ.pop("LISTEN_PID", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if not fds or pid != str(os.getpid()):
        return []
    try:
        count = int(fds)
    except ValueError:
        return []
    return [LISTEN_FDS_START + i for i in range(count)]


def notify(state: str) -> bool:
    """Sends ``state`` (e.g. ``READY=1``) to ``NOTIFY_SOCKET`` if it is set."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
        return True
    except OSError:
        return False
