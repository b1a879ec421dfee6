"""An app for the process-model tests: answers with the worker's pid, sleeps, gets
stuck, holds the GIL, reports its threads' timer slack, and (when BIG_IMPORT is set)
carries a large heap from import."""

import ctypes
import os
import re
import threading
import time
from urllib.parse import parse_qs

# A heap worth sharing: preload imports it once in the master.
BIG = [str(i) * 3 for i in range(int(os.environ.get("BIG_IMPORT", "0")))]


def stuck_in_the_app():
    time.sleep(60)


def timer_slack():
    """The calling thread's timer slack in nanoseconds (prctl PR_GET_TIMERSLACK)."""
    return ctypes.CDLL(None).prctl(30, 0, 0, 0, 0)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/sleep":
        time.sleep(float(q.get("s", ["0.5"])[0]))
    elif path == "/stuck":
        stuck_in_the_app()
    elif path == "/gil":
        # The regex engine keeps the GIL for the whole (exponential) match.
        re.match(r"(a+)+$", "a" * 64 + "b")
    elif path == "/drip":
        # Two blocks at once, then a pause: the second must not wait for the third.
        start_response("200 OK", [("Content-Type", "text/plain")])

        def drip():
            yield b"first;"
            yield b"second;"
            time.sleep(0.5)
            yield b"third;"
        return drip()
    elif path == "/uid":
        body = str(os.getuid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    elif path == "/timerslack":
        # The app's thread, and a thread it starts (which inherits the slack).
        started = []
        t = threading.Thread(target=lambda: started.append(timer_slack()))
        t.start()
        t.join()
        body = f"{timer_slack()} {started[0]}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
