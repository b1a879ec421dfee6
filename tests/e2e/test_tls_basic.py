"""TLS from the command line with real clients (Python ssl, curl): the environ of a TLS
request, keep-alive, plain HTTP sent to the TLS port, and the start-up refusal of files
that cannot be used. Certificates are made here with the openssl command (a CA and a
leaf for localhost and 127.0.0.1); the thorough tests are in test_tls.py."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import APPS, free_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")

EXT = "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=ferrule test CA", cwd=d)
    openssl("req", *ec, "-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "ext.cnf").write_text(EXT)
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    # The same key in SEC1 ("EC PRIVATE KEY"), beside the PKCS#8 one openssl req wrote.
    openssl("ec", "-in", "key.pem", "-out", "key-sec1.pem", cwd=d)
    # A client certificate from the same CA.
    openssl("req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/O=Ferrule Test/CN=client", cwd=d)
    # v3 with extensions: webpki refuses the v1 certificate `x509 -req` makes without them.
    (d / "client.cnf").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "client.pem", "-days", "2", "-extfile", "client.cnf", cwd=d)
    return d


def client_context(certs: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def get_json(conn: http.client.HTTPConnection, path: str) -> dict:
    conn.request("GET", path)
    r = conn.getresponse()
    assert r.status == 200
    return json.loads(r.read())


@pytest.mark.parametrize("key", ["key.pem", "key-sec1.pem"])
def test_a_tls_request_says_https_and_keeps_alive(serve, certs, key):
    srv = serve("routes:app", "--certfile", str(certs / "cert.pem"), "--keyfile", str(certs / key))
    conn = http.client.HTTPSConnection("localhost", srv.port, context=client_context(certs), timeout=10)
    first = get_json(conn, "/environ")
    assert first["wsgi.url_scheme"] == "https"
    assert first["HTTPS"] == "on"
    assert first["SERVER_PORT"] == str(srv.port)
    sock = conn.sock
    assert get_json(conn, "/environ?again")["wsgi.url_scheme"] == "https"
    assert conn.sock is sock, "the second request did not reuse the connection"
    assert sock.version() in ("TLSv1.2", "TLSv1.3")
    assert sock.selected_alpn_protocol() == "http/1.1"
    conn.close()
    assert f"Listening at: https://127.0.0.1:{srv.port}" in srv.log()


def test_a_plain_bind_beside_a_tls_one_says_http(serve, certs):
    # The bare bind follows --certfile (TLS); the `http://` one stays plain, and its
    # "Listening at" line says so.
    plain = free_port()
    srv = serve("routes:app", "--certfile", str(certs / "cert.pem"), "--keyfile", str(certs / "key.pem"),
                "-b", f"http://127.0.0.1:{plain}")
    conn = http.client.HTTPConnection("127.0.0.1", plain, timeout=10)
    env = get_json(conn, "/environ")
    conn.close()
    assert env["wsgi.url_scheme"] == "http" and "HTTPS" not in env
    log = srv.log()
    assert f"Listening at: https://127.0.0.1:{srv.port} " in log, log
    assert f"Listening at: http://127.0.0.1:{plain} " in log, log
    assert f"https://127.0.0.1:{plain}" not in log, log


def test_curl_over_tls(serve, certs):
    srv = serve("routes:app", "--certfile", str(certs / "cert.pem"), "--keyfile", str(certs / "key.pem"))
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(["curl", "-sS", "--cacert", str(certs / "ca.pem"), "-w", "\n%{http_version}",
                          f"https://127.0.0.1:{srv.port}/environ"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    body, version = out.stdout.rsplit("\n", 1)
    assert json.loads(body)["wsgi.url_scheme"] == "https"
    assert version == "1.1"


def test_plain_http_to_the_tls_port_is_told_so(serve, certs):
    srv = serve("routes:app", "--certfile", str(certs / "cert.pem"), "--keyfile", str(certs / "key.pem"))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.1 400 ")
    assert got.endswith(b"The plain HTTP request was sent to HTTPS port\n")


def start_fails(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferrule", "routes:app", "-b", f"127.0.0.1:{free_port()}",
                           "--chdir", str(APPS), *args], capture_output=True, text=True, timeout=30)


def test_files_that_cannot_be_used_stop_start_up_with_exit_3(certs, tmp_path):
    other = tmp_path / "other.pem"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", str(other),
            cwd=tmp_path)
    missing = tmp_path / "missing.pem"
    cert, key = str(certs / "cert.pem"), str(certs / "key.pem")
    for args, named in [
        (("--certfile", str(missing), "--keyfile", key), missing),
        (("--certfile", cert, "--keyfile", str(missing)), missing),
        (("--certfile", cert, "--keyfile", str(other)), other),  # not the certificate's key
        (("--certfile", cert, "--keyfile", cert), Path(cert)),  # no key in it
        (("--certfile", cert, "--keyfile", key, "--cert-reqs", "2", "--ca-certs", str(missing)), missing),
    ]:
        r = start_fails(*args, "-w", "2")
        assert r.returncode == 3, (args, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if str(named) in ln]
        assert len(lines) == 1, (args, r.stderr)
        assert "Booting worker" not in r.stderr


def test_cert_reqs_is_0_1_or_2(certs):
    r = start_fails("--certfile", str(certs / "cert.pem"), "--cert-reqs", "3")
    assert r.returncode == 2
    assert "cert" in r.stderr and "3" in r.stderr


def test_the_mtls_environ(serve, certs):
    srv = serve("routes:app", "--certfile", str(certs / "cert.pem"), "--keyfile", str(certs / "key.pem"),
                "--ca-certs", str(certs / "ca.pem"), "--cert-reqs", "1")
    ctx = client_context(certs)
    ctx.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
    conn = http.client.HTTPSConnection("localhost", srv.port, context=ctx, timeout=10)
    env = get_json(conn, "/environ")
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_S_DN"] == "CN=client,O=Ferrule Test"
    assert env["SSL_CLIENT_I_DN"] == "CN=ferrule test CA"
    pem = (certs / "client.pem").read_text()
    assert env["SSL_CLIENT_CERT"] == pem[pem.index("-----BEGIN"):]
    assert env["SSL_PROTOCOL"] == conn.sock.version()
    assert env["SSL_CIPHER"] == conn.sock.cipher()[0]
    conn.close()
    # Optional: a client without a certificate is served, and told so.
    anon = http.client.HTTPSConnection("localhost", srv.port, context=client_context(certs), timeout=10)
    env = get_json(anon, "/environ")
    assert env["SSL_CLIENT_VERIFY"] == "NONE" and "SSL_CLIENT_S_DN" not in env
    anon.close()


def test_a_unix_socket_bind_is_tls_too(serve, certs, tmp_path):
    path = tmp_path / "tls.sock"
    serve("routes:app", "--certfile", str(certs / "cert.pem"), "--keyfile", str(certs / "key.pem"),
          "-b", f"unix:{path}")
    with socket.socket(socket.AF_UNIX) as raw_sock:
        raw_sock.settimeout(10)
        raw_sock.connect(str(path))
        with client_context(certs).wrap_socket(raw_sock, server_hostname="localhost") as s:
            s.sendall(b"GET /environ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            got = b""
            while chunk := s.recv(65536):
                got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body)["wsgi.url_scheme"] == "https"


def test_a_request_over_timeout_ends_its_session_without_raw_bytes(serve, certs):
    # The timeout's 500 cannot be written into a session another thread holds: the
    # socket is shut instead, and the client sees the end (never plaintext in the stream).
    srv = serve("timeout_app:app", "--certfile", str(certs / "cert.pem"), "--keyfile", str(certs / "key.pem"),
                "--timeout", "1")
    conn = http.client.HTTPSConnection("localhost", srv.port, context=client_context(certs), timeout=20)
    conn.request("POST", "/read-then-stall", body=b"x")
    # An end without close_notify (SSLEOFError) or without a byte; never a record error.
    with pytest.raises((http.client.RemoteDisconnected, ssl.SSLEOFError, ConnectionResetError)):
        conn.getresponse()
    conn.close()
    fresh = http.client.HTTPSConnection("localhost", srv.port, context=client_context(certs), timeout=20)
    fresh.request("GET", "/")
    assert fresh.getresponse().status == 200
    fresh.close()
