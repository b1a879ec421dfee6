"""What tests/e2e/test_tls*.py share: certificates made per test (trustme), the server
fixture (ferrule, or gunicorn with `FERRULE_E2E_REFERENCE=gunicorn`), and TLS clients.

Certificates: a root CA the clients trust, an intermediate they do not have, and a leaf for
`localhost`/127.0.0.1 signed by the intermediate; the server's certfile is the leaf followed
by the intermediate, so every successful handshake also shows the server sends its chain.
mTLS clients get a certificate from a second CA (`--ca-certs`). Keys are trustme's (SEC1 EC).
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import APPS, Server, free_port, wait_for_port

trustme = pytest.importorskip("trustme")
requests = pytest.importorskip("requests")
sys.path.insert(0, str(APPS))
import tls_app  # noqa: E402

REFERENCE = os.environ.get("FERRULE_E2E_REFERENCE") == "gunicorn"
GUNICORN = Path(sys.executable).parent / "gunicorn"
OPENSSL, CURL = shutil.which("openssl"), shutil.which("curl")


class Certs:
    """The PEM files of one test: ca.pem (trusted), server.pem (leaf + intermediate),
    server.key, client-ca.pem, client.pem (+ its key inside)."""

    def __init__(self, tmp: Path):
        self.dir = tmp
        self.ca = trustme.CA()
        self.inter = self.ca.create_child_ca()
        self.leaf = self.leaf_again()
        self.client_ca = trustme.CA()
        client = self.client_ca.issue_cert("client@example.org", common_name="test client")
        self.ca.cert_pem.write_to_path(self.path("ca.pem"))
        self.write_server(self.leaf)
        self.client_ca.cert_pem.write_to_path(self.path("client-ca.pem"))
        client.private_key_and_cert_chain_pem.write_to_path(self.path("client.pem"))

    def leaf_again(self):
        return self.inter.issue_cert("localhost", "127.0.0.1")

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def write_server(self, leaf) -> None:
        """Writes server.pem and server.key aside, then renames each in: a server never reads a
        half-written file (the tests send HUP only once both are in place)."""
        with open(self.path("server.pem.new"), "wb") as f:
            for blob in leaf.cert_chain_pems:
                f.write(blob.bytes())
        leaf.private_key_pem.write_to_path(self.path("server.key.new"))
        os.replace(self.path("server.key.new"), self.path("server.key"))
        os.replace(self.path("server.pem.new"), self.path("server.pem"))

    def context(self, client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.path("ca.pem"))
        if client_cert:
            ctx.load_cert_chain(self.path("client.pem"))
        return ctx


@pytest.fixture
def certs(tmp_path) -> Certs:
    return Certs(tmp_path)


@pytest.fixture(scope="module", autouse=True)
def app_file():
    Path(tls_app.FILE_PATH).write_bytes(tls_app.file_bytes())


class Gunicorn(Server):
    """gunicorn with its TLS switched on, started and logged the way conftest's Server is."""

    def __init__(self, target: str, args: list[str], tmp: Path):
        self.port = free_port()
        self.errlog, self.outlog = tmp / f"err-{self.port}.log", tmp / f"out-{self.port}.log"
        cmd = [str(GUNICORN), "-k", "gthread", "--threads", "8", "-w", "1", "-b", f"127.0.0.1:{self.port}",
               "--chdir", str(APPS), *args, target]
        self.proc = subprocess.Popen(cmd, stdout=open(self.outlog, "wb"), stderr=open(self.errlog, "wb"))
        wait_for_port(self.port, self.proc)


@pytest.fixture
def tls(tmp_path, certs):
    """start(*extra flags) -> a server on 127.0.0.1 with TLS from `certs`."""
    started = []

    def start(*extra: str, tls_flags: bool = True) -> Server:
        args = ["--certfile", certs.path("server.pem"), "--keyfile", certs.path("server.key")] if tls_flags else []
        args += list(extra)
        s = Gunicorn("tls_app:app", args, tmp_path) if REFERENCE else Server("tls_app:app", args, tmp_path)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def https(port: int, ctx: ssl.SSLContext, timeout: float = 10.0) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("localhost", port, context=ctx, timeout=timeout)


def fetch(port, ctx, method="GET", path="/hello", body=None, headers=None, timeout=10.0):
    c = https(port, ctx, timeout)
    try:
        headers = headers or {}
        c.request(method, path, body=body, headers=headers, encode_chunked="Transfer-Encoding" in headers)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def tls_socket(port: int, ctx: ssl.SSLContext, **kw) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost", **kw)


def read_until_close(sock) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def s_client(port: int, certs: Certs, *args: str, request: bytes = b"") -> str:
    assert OPENSSL, "openssl is needed (make test installs it)"
    cmd = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
           "-CAfile", certs.path("ca.pem"), "-verify_return_error", "-ign_eof", *args]
    r = subprocess.run(cmd, input=request, capture_output=True, timeout=20)
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def s_clients(count: int, port: int, certs: Certs, *args: str, request: bytes = b"") -> list:
    """`count` s_client processes at once (so that several workers accept); their outputs."""
    assert OPENSSL, "openssl is needed (make test installs it)"
    cmd = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
           "-CAfile", certs.path("ca.pem"), "-verify_return_error", "-ign_eof", *args]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(count)]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(request, timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        outs.append(out.decode(errors="replace"))
    return outs


GET_CLOSE = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
