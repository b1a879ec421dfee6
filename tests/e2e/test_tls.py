"""ferrule serving TLS itself (`--certfile`/`--keyfile`, issue 24), checked with real clients:
Python `ssl`/`http.client`, `requests`, `curl` and `openssl s_client`.

Certificates are made here (trustme): a root CA the clients trust, an intermediate they do
not have, and a leaf for `localhost`/127.0.0.1 signed by the intermediate; the server's
certfile is the leaf followed by the intermediate, so every successful handshake also shows
the server sends its chain. mTLS clients get a certificate from a second CA (`--ca-certs`).

`FERRULE_E2E_REFERENCE=gunicorn` runs the same tests against gunicorn's own TLS (gthread,
8 threads, the same flags), the check that the tests ask what a TLS WSGI server really does.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
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
        inter = self.ca.create_child_ca()
        self.leaf = inter.issue_cert("localhost", "127.0.0.1")
        self.client_ca = trustme.CA()
        client = self.client_ca.issue_cert("client@example.org", common_name="test client")
        self.ca.cert_pem.write_to_path(self.path("ca.pem"))
        self.write_server(self.leaf)
        self.client_ca.cert_pem.write_to_path(self.path("client-ca.pem"))
        client.private_key_and_cert_chain_pem.write_to_path(self.path("client.pem"))

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def write_server(self, leaf) -> None:
        with open(self.path("server.pem"), "wb") as f:
            for blob in leaf.cert_chain_pems:
                f.write(blob.bytes())
        leaf.private_key_pem.write_to_path(self.path("server.key"))

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


GET_CLOSE = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


# Clients and protocol versions.

def test_python_ssl_verifies_the_chain_and_sees_https(tls, certs):
    s = tls()
    status, _, body = fetch(s.port, certs.context(), path="/environ")
    assert status == 200
    assert json.loads(body)["wsgi.url_scheme"] == "https"
    with tls_socket(s.port, certs.context()) as t:
        assert t.version() in ("TLSv1.2", "TLSv1.3")
        assert t.selected_alpn_protocol() is None  # the client offered none


@pytest.mark.xfail(strict=True, reason="gunicorn sets no HTTPS" if REFERENCE else
                   "ferrule-py's environ sets HTTPS only from a uwsgi packet, not for a TLS bind yet")
def test_https_on(tls, certs):
    s = tls()
    assert json.loads(fetch(s.port, certs.context(), path="/environ")[2])["HTTPS"] == "on"


def test_requests_library(tls, certs):
    s = tls()
    r = requests.get(f"https://localhost:{s.port}/hello", verify=certs.path("ca.pem"), timeout=10)
    assert (r.status_code, r.text) == (200, "Hello, World!")


def test_curl(tls, certs):
    assert CURL, "curl is needed (make test installs it)"
    s = tls()
    out = subprocess.run([CURL, "-sS", "--http1.1", "--cacert", certs.path("ca.pem"), "-w", "\n%{http_version}",
                          f"https://localhost:{s.port}/hello"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Hello, World!\n1.1"


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_openssl_versions_and_alpn(tls, certs, version):
    s = tls()
    out = s_client(s.port, certs, version, "-alpn", "http/1.1", request=GET_CLOSE)
    assert "Verify return code: 0 (ok)" in out
    assert f"Protocol  : TLSv1.{version[-1]}" in out or f"New, TLSv1.{version[-1]}" in out
    assert "HTTP/1.1 200 OK" in out and "Hello, World!" in out
    if not REFERENCE:  # gunicorn sets no ALPN protocols on its context
        assert "ALPN protocol: http/1.1" in out
    assert " 1 s:" in out  # the intermediate, sent by the server (depth 1 of the chain)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # asking for the old versions is the point
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_versions_refused(tls, certs, version):
    s = tls()
    ctx = certs.context()
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # so this client really offers the old version
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as e:
        tls_socket(s.port, ctx).close()
    assert "NO_PROTOCOLS_AVAILABLE" not in str(e.value), "the client refused, not the server"


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
@pytest.mark.xfail(REFERENCE, strict=True, reason="gunicorn closes without a close_notify, so OpenSSL drops "
                   "the session")
def test_resumption_openssl(tls, certs, tmp_path, version):
    s = tls()
    sess = str(tmp_path / "session.pem")
    first = s_client(s.port, certs, version, "-sess_out", sess, request=GET_CLOSE)
    assert "HTTP/1.1 200 OK" in first and os.path.getsize(sess) > 0
    again = s_client(s.port, certs, version, "-sess_in", sess, request=GET_CLOSE)
    assert "Reused, TLSv1." in again and "HTTP/1.1 200 OK" in again


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.xfail(strict=True, reason="gunicorn closes without a close_notify, so OpenSSL drops the session"
                   if REFERENCE else "each worker keeps its own sessions: keys shared by the workers of one master "
                   "are not built yet (issue 24)")
def test_resumption_shared_by_workers(tls, certs, version):
    s = tls("-w", "4")
    ctx = certs.context()
    ctx.maximum_version = version

    def get(session=None):
        t = tls_socket(s.port, ctx, session=session)
        t.sendall(b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = read_until_close(t)
        out = (json.loads(reply.partition(b"\r\n\r\n")[2])["pid"], t.session_reused, t.session)
        t.close()
        return out

    first_pid, _, session = get()
    seen = []
    for _ in range(8):  # rounds of 6 connections held open at once, so that several workers accept
        batch = [tls_socket(s.port, ctx, session=session) for _ in range(6)]
        for t in batch:
            t.sendall(b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for t in batch:
            seen.append((json.loads(read_until_close(t).partition(b"\r\n\r\n")[2])["pid"], t.session_reused))
            t.close()
        if any(pid != first_pid for pid, _ in seen):
            break
    if all(pid == first_pid for pid, _ in seen):
        pytest.skip("every connection reached the worker that made the session: nothing shown")
    assert all(reused for _, reused in seen), seen


# mTLS: --ca-certs + --cert-reqs 2.

def test_mtls_client_without_certificate_refused(tls, certs):
    s = tls("--ca-certs", certs.path("client-ca.pem"), "--cert-reqs", "2")
    # TLS 1.3 sends the server's refusal after the client's Finished: it shows on the first read.
    with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected)):
        fetch(s.port, certs.context())
    status, _, body = fetch(s.port, certs.context(client_cert=True))
    assert (status, body) == (200, b"Hello, World!")
    r = requests.get(f"https://localhost:{s.port}/hello", verify=certs.path("ca.pem"),
                     cert=certs.path("client.pem"), timeout=10)
    assert r.status_code == 200


@pytest.mark.xfail(strict=True, reason="gunicorn gives the app no SSL_CLIENT_* keys" if REFERENCE else
                   "the mTLS environ (SSL_CLIENT_*, SSL_PROTOCOL, SSL_CIPHER) is not built yet")
def test_mtls_environ(tls, certs):
    s = tls("--ca-certs", certs.path("client-ca.pem"), "--cert-reqs", "2")
    _, _, body = fetch(s.port, certs.context(client_cert=True), path="/environ")
    env = json.loads(body)
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert "CN=test client" in env["SSL_CLIENT_S_DN"]
    assert env["SSL_CLIENT_CERT"].startswith("-----BEGIN CERTIFICATE-----")
    assert env["SSL_CLIENT_I_DN"] and env["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3") and env["SSL_CIPHER"]


# Everything plain HTTP does, over TLS.

def test_keep_alive_and_pipelining(tls, certs):
    s = tls()
    c = https(s.port, certs.context())
    for _ in range(3):
        c.request("GET", "/hello")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"Hello, World!")
    c.close()
    with tls_socket(s.port, certs.context()) as t:
        t.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n" * 3 + GET_CLOSE)
        replies = read_until_close(t)
    assert replies.count(b"HTTP/1.1 200 OK") == 4 and replies.count(b"Hello, World!") == 4


def test_chunked_both_ways(tls, certs):
    s = tls()
    pieces = [os.urandom(n) for n in (1, 4000, 70000, 3)]
    status, _, body = fetch(s.port, certs.context(), "POST", "/echo", body=iter(pieces),
                            headers={"Transfer-Encoding": "chunked"})
    whole = b"".join(pieces)
    assert (status, json.loads(body)) == (200, {"size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()})
    status, headers, body = fetch(s.port, certs.context(), path="/stream")
    assert headers.get("Transfer-Encoding") == "chunked"  # a streamed response, chunked
    assert body == b"".join(bytes([48 + i % 10]) * 1000 for i in range(40))


def test_100_continue(tls, certs):
    s = tls()
    with tls_socket(s.port, certs.context()) as t:
        t.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n"
                  b"Connection: close\r\n\r\n")
        interim = t.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        t.sendall(b"hello")
        reply = interim[25:] + read_until_close(t)
    assert reply.startswith(b"HTTP/1.1 200 OK") and hashlib.sha256(b"hello").hexdigest().encode() in reply


def test_5mb_upload_and_3mb_file_wrapper_intact(tls, certs):
    s = tls()
    upload = os.urandom(5 * 1024 * 1024)
    status, _, body = fetch(s.port, certs.context(), "POST", "/echo", body=upload)
    assert (status, json.loads(body)["sha256"]) == (200, hashlib.sha256(upload).hexdigest())
    status, _, body = fetch(s.port, certs.context(), path="/file")
    assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(tls_app.file_bytes()).digest()


@pytest.mark.xfail(REFERENCE, strict=True, reason="gunicorn's gthread does the handshake on one of its "
                   "8 threads: stalled handshakes take them all")
def test_stalled_handshakes_do_not_delay_a_normal_request(tls, certs):
    s = tls()
    stalled = []
    try:
        for _ in range(300):  # a TLS record header announcing a ClientHello that never comes
            c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            c.sendall(b"\x16\x03\x01\x02\x00\x01")
            stalled.append(c)
        times = []
        for _ in range(40):
            start = time.monotonic()
            status, _, _ = fetch(s.port, certs.context(), timeout=5)
            times.append(time.monotonic() - start)
            assert status == 200
        times.sort()
        assert times[int(len(times) * 0.95) - 1] < 0.1, times
    finally:
        for c in stalled:
            c.close()


# Wrong protocol on a port, stop, start-up errors.

def test_plain_http_to_the_tls_port_answered_or_closed(tls):
    s = tls()
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:  # a hang raises here
        c.sendall(GET_CLOSE)
        reply = read_until_close(c)
    if not REFERENCE:  # gunicorn closes without a word
        assert reply.startswith(b"HTTP/1.1 400") and b"plain HTTP" in reply
    else:
        assert reply == b""


def test_client_hello_to_a_plain_port_closed(tls, certs):
    s = tls(tls_flags=False)
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)) as e:
        tls_socket(s.port, certs.context()).close()
    assert not isinstance(e.value, socket.timeout)
    if not REFERENCE:  # gunicorn answers it 400 as a bad request
        assert "TLS" in s.log()


@pytest.mark.xfail(REFERENCE, strict=True, reason="gunicorn closes its idle keep-alive sockets without "
                   "a close_notify")
def test_graceful_stop_sends_close_notify(tls, certs):
    s = tls()
    t = tls_socket(s.port, certs.context(), suppress_ragged_eofs=False)
    t.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"Hello, World!" in t.recv(65536)
    s.proc.send_signal(signal.SIGTERM)
    try:
        assert t.recv(65536) == b""  # close_notify; a bare TCP close raises SSLEOFError
    finally:
        t.close()
    assert s.proc.wait(timeout=15) == 0


@pytest.mark.skipif(REFERENCE, reason="gunicorn checks only that the files exist: bad ones crash-loop its workers")
def test_bad_key_or_certificate_one_line_exit_3(tmp_path, certs):
    other = trustme.CA().issue_cert("localhost")
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    cases = {"missing": (str(tmp_path / "nope.pem"), certs.path("server.key")),
             "garbage": (str(tmp_path / "garbage.pem"), certs.path("server.key")),
             "mismatched": (certs.path("server.pem"), str(tmp_path / "other.key"))}
    for what, (cert, key) in cases.items():
        cmd = [sys.executable, "-m", "ferrule", "-b", f"127.0.0.1:{free_port()}", "--chdir", str(APPS),
               "--certfile", cert, "--keyfile", key, "tls_app:app"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        lines = r.stderr.strip().splitlines()
        named = (key, cert) if what == "mismatched" else (cert,)  # either file, for a mismatch
        assert r.returncode == 3 and len(lines) == 1 and any(n in lines[0] for n in named), (what, r.stderr)
