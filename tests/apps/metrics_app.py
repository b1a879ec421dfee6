"""An app for the metrics tests (tests/e2e/test_metrics*.py, test_server_timing.py,
test_statsd.py): answers with its pid, a chosen status, its own Server-Timing field,
after a sleep, or ends its worker (a crash)."""

import os
import time


def app(environ, start_response):
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    headers = [("Content-Type", "text/plain")]
    status = "200 OK"
    if path == "/status":
        status = f"{int(query)} Chosen"
    elif path == "/own-timing":
        headers.append(("Server-Timing", "db;dur=7"))
    elif path == "/sleep":
        time.sleep(float(query))
    elif path == "/crash":
        os._exit(1)
    body = str(os.getpid()).encode()
    headers.append(("Content-Length", str(len(body))))
    start_response(status, headers)
    return [body]
