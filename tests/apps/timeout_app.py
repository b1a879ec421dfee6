"""An app for tests/e2e/test_timeout.py: what --timeout counts (time in the app without
progress) and what it does not (waits on the client)."""

import os
import time


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/events":
        # An event stream: one block a second, eight of them.
        start_response("200 OK", [("Content-Type", "text/event-stream")])

        def events():
            for i in range(8):
                yield f"data: {i}\n\n".encode()
                time.sleep(1)
        return events()
    if path == "/big":
        # 12 MiB in 128 KiB blocks, produced at once: a slow reader paces the writes.
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        block = b"x" * (128 * 1024)
        return (block for _ in range(96))
    if path == "/read-then-stall":
        # Reads its body, then is stuck before its first byte for longer than
        # --timeout: a timeout, counted from the end of the body.
        environ["wsgi.input"].read()
        time.sleep(30)
    body = f"{os.getpid()} {len(environ['wsgi.input'].read())}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
