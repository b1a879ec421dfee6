"""The master's pid file (``--pid``): written whole, refused while another live master
is named in it, and removed only by the master it names."""

from __future__ import annotations

import os
import tempfile

from ferrule.halt import HaltServer


def write_pidfile(path: str, pid: int, replaces: int = 0) -> None:
    """Writes `pid` to `path` unless another live process is named there (`replaces`,
    the old master of an upgrade, may be), as gunicorn does.

    The file is mode 0644 whatever the umask (the master runs under ``--umask``, 0 by
    default) and appears whole: written to a temporary file in the same directory,
    synced, then renamed over `path`, so a reader sees the old file or the new one,
    never an empty or partial one."""
    old = pidfile_owner(path)
    if old and old not in (pid, replaces):
        raise HaltServer(f"pidfile {path}: already running on pid {old} (or the pid file is stale: "
                         f"remove it if pid {old} is not a ferrule master)", 1)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        raise HaltServer(f"pidfile {path}: cannot create it: {exc.strerror or exc}", 1) from None
    try:
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, f"{pid}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise HaltServer(f"pidfile {path}: cannot write it: {exc.strerror or exc}", 1) from None


def pidfile_owner(path: str) -> int:
    """The live process a pid file names, or 0 (no file, no number, no such process).
    A process of another user (EPERM) is alive, as for gunicorn."""
    try:
        with open(path) as f:
            old = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0
    if old <= 0:
        return 0
    try:
        os.kill(old, 0)
    except ProcessLookupError:
        return 0
    except PermissionError:
        return old
    return old


def remove_pidfile(path: str, pid: int) -> None:
    try:
        with open(path) as f:
            if int(f.read().strip() or 0) != pid:
                return
        os.unlink(path)
    except (OSError, ValueError):
        pass
