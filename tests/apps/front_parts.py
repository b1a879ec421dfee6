"""What the front-server apps (`front_flask.py`, `front_django.py`) share: the environ as
JSON, an upload hashed as it streams in, and cues a streamed response waits on.

A cue is a `threading.Event` per key in the worker process: the streaming view yields its
first block, then waits until the test asks `/release/<key>` (served by another thread),
so the test knows the first block reached it before the app made the second.
"""

import hashlib
import os
import threading

_cues: dict[str, threading.Event] = {}
_lock = threading.Lock()

FIRST, SECOND = b"block 1 " + b"." * 100 + b"\n", b"block 2 " + b"." * 100 + b"\n"
CUE_TIMEOUT = 20.0
# The file `/download` sends through `wsgi.file_wrapper`, named by the test.
DOWNLOAD = os.environ.get("FRONT_DOWNLOAD", os.devnull)


def environ_strings(environ) -> dict:
    """Every value of the environ that is a str, keyed as the app saw it."""
    return {k: v for k, v in environ.items() if isinstance(v, str)}


def hash_stream(read) -> dict:
    """Reads a body through `read(n)` in blocks: its size and sha256."""
    digest, size = hashlib.sha256(), 0
    while block := read(65536):
        digest.update(block)
        size += len(block)
    return {"size": size, "sha256": digest.hexdigest()}


def cue(key: str) -> threading.Event:
    with _lock:
        return _cues.setdefault(key, threading.Event())


def blocks(key: str):
    """The first block at once, the second once the test releases `key` (or a line saying
    it never did, so a test that forgot fails instead of hanging)."""
    yield FIRST
    if not cue(key).wait(CUE_TIMEOUT):
        yield b"never released\n"
        return
    yield SECOND
