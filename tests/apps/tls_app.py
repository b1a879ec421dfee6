"""The app behind tests/e2e/test_tls.py: one route per thing TLS must carry unchanged."""

import hashlib
import json
import os

# The /file route's content: 3 MB and a few bytes made from a constant, so that the test
# can hash what it expects without asking the server.
FILE_SIZE = 3 * 1024 * 1024 + 7
FILE_PATH = os.environ.get("TLS_APP_FILE", "/tmp/ferrule-tls-app.bin")
ENVIRON_KEYS = ("wsgi.url_scheme", "HTTPS", "SSL_CLIENT_VERIFY", "SSL_CLIENT_S_DN", "SSL_CLIENT_I_DN",
                "SSL_CLIENT_CERT", "SSL_PROTOCOL", "SSL_CIPHER")


def file_bytes() -> bytes:
    block = hashlib.sha256(b"ferrule tls").digest() * 2048  # 64 KB
    return (block * (FILE_SIZE // len(block) + 1))[:FILE_SIZE]


def _send(start_response, body, ctype="text/plain"):
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hello":
        return _send(start_response, b"Hello, World!")
    if path == "/environ":
        found = {k: environ[k] for k in ENVIRON_KEYS if k in environ}
        found["pid"] = os.getpid()  # which worker answered
        return _send(start_response, json.dumps(found).encode(), "application/json")
    if path == "/echo":  # the body's length and sha256 (read to the end: chunked bodies too)
        digest, size, inp = hashlib.sha256(), 0, environ["wsgi.input"]
        while block := inp.read(65536):
            digest.update(block)
            size += len(block)
        return _send(start_response, json.dumps({"size": size, "sha256": digest.hexdigest()}).encode(),
                     "application/json")
    if path == "/stream":  # no Content-Length: chunked on HTTP/1.1, 40 pieces of 1000 bytes
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (bytes([48 + i % 10]) * 1000 for i in range(40))
    if path == "/file":
        f = open(FILE_PATH, "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(os.fstat(f.fileno()).st_size))])
        return environ["wsgi.file_wrapper"](f, 65536)
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
    return [b""]
