"""An app for the drain and timeout tests (tests/e2e/test_drain.py): answers with the
worker's pid and the size of the body it read, sleeps past a timeout, or streams a
head and then hangs."""

import os
import time


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stuck":
        time.sleep(30)
    elif path == "/stuck-stream":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def blocks():
            yield b"first;"
            time.sleep(30)
            yield b"never;"
        return blocks()
    size = len(environ["wsgi.input"].read())
    body = f"{os.getpid()} {size}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
