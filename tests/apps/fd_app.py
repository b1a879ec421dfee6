"""The app of the descriptor-exhaustion tests: answers with its pid; after `/leak`, a
thread takes every descriptor the process can open and keeps it (a leak that takes
those freed later too)."""

import os
import threading
import time

_leaked = []


def _grab():
    try:
        while len(_leaked) < 100_000:
            _leaked.append(os.open("/dev/null", os.O_RDONLY))
        return True
    except OSError:
        return False


def _leak_forever():
    for _ in range(100_000):
        _grab()
        time.sleep(0.005)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/leak" and not _leaked:
        _grab()
        threading.Thread(target=_leak_forever, daemon=True).start()
        body = f"leaked {len(_leaked)}".encode()
    else:
        body = f"hello from {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
