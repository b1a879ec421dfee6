"""ferrule serving TLS itself (`--certfile`/`--keyfile`, issue 24): real clients (Python
`ssl`/`http.client`, `requests`, `curl`, `openssl s_client`), protocol versions, ALPN, the
chain, session resumption and mTLS. Certificates and the server fixture: tls_support.py.

`FERRULE_E2E_REFERENCE=gunicorn` runs the same tests against gunicorn's own TLS (gthread,
8 threads, the same flags), the check that the tests ask what a TLS WSGI server really does.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import children, serving, wait_until

# certs and tls are fixtures: imported, pytest finds them by name.
from .tls_support import (CURL, GET_CLOSE, REFERENCE, certs, fetch, read_until_close, requests,  # noqa: F401
                          s_client, s_clients, tls, tls_socket, trustme)


# Clients and protocol versions.

def test_python_ssl_verifies_the_chain_and_sees_https(tls, certs):
    s = tls()
    status, _, body = fetch(s.port, certs.context(), path="/environ")
    assert status == 200
    assert json.loads(body)["wsgi.url_scheme"] == "https"
    with tls_socket(s.port, certs.context()) as t:
        assert t.version() in ("TLSv1.2", "TLSv1.3")
        assert t.selected_alpn_protocol() is None  # the client offered none


@pytest.mark.xfail(REFERENCE, strict=True, reason="gunicorn sets no HTTPS")
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


GET_ENVIRON = b"GET /environ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.xfail(REFERENCE, strict=True, reason="gunicorn closes without a close_notify, so OpenSSL drops "
                   "the session")
def test_resumption_shared_by_workers(tls, certs, version):
    # The ticket keys come from a secret the master made before forking: a session one
    # worker made resumes on every other.
    s = tls("-w", "4")
    ctx = certs.context()
    ctx.maximum_version = version
    t = tls_socket(s.port, ctx)
    t.sendall(GET_ENVIRON)
    first_pid = json.loads(read_until_close(t).partition(b"\r\n\r\n")[2])["pid"]
    session = t.session
    t.close()
    def resume(_):
        with tls_socket(s.port, ctx, session=session) as t:
            t.sendall(GET_ENVIRON)
            return json.loads(read_until_close(t).partition(b"\r\n\r\n")[2])["pid"], t.session_reused

    seen = []
    # Rounds of 8 handshakes at once from threads (one after another, the same idle worker
    # would take each), so that several workers accept.
    with ThreadPoolExecutor(8) as pool:
        for _ in range(20):
            seen += pool.map(resume, range(8))
            if len({pid for pid, _ in seen} - {first_pid}) >= 2:
                break
    assert all(reused for _, reused in seen), seen
    if {pid for pid, _ in seen} == {first_pid}:
        pytest.skip("every connection reached the worker that made the session: nothing shown")


@pytest.mark.xfail(REFERENCE, strict=True, reason="gunicorn closes without a close_notify, so OpenSSL drops "
                   "the session")
def test_resumption_survives_hup(tls, certs):
    # HUP rebuilds the configuration and replaces every worker; the ticket secret is the
    # master's, kept: the new workers resume a session the old ones made.
    s = tls("-w", "2")
    ctx = certs.context()
    with tls_socket(s.port, ctx) as t:
        t.sendall(GET_ENVIRON)
        read_until_close(t)
        session = t.session
    old = set(wait_until(lambda: (k := children(s.proc.pid)) and len(k) == 2 and k))
    s.proc.send_signal(signal.SIGHUP)
    new = wait_until(lambda: (k := set(children(s.proc.pid))) and len(k) == 2 and not k & old
                     and all(serving(p) for p in k) and k, timeout=30)
    with tls_socket(s.port, ctx, session=session) as t:
        t.sendall(GET_ENVIRON)
        pid = json.loads(read_until_close(t).partition(b"\r\n\r\n")[2])["pid"]
        assert t.session_reused and pid in new



@pytest.mark.parametrize("change", ["certificate", "client-ca"])
def test_a_hup_that_changes_the_files_ends_resumption_of_older_sessions(tls, certs, change):
    # A session vouches for the certificate it was made under and for the client CA that
    # verified its client: once a HUP changed either, those sessions must not resume (a
    # client whose CA was removed would otherwise keep SSL_CLIENT_VERIFY=SUCCESS).
    s = tls("-w", "1", "--ca-certs", certs.path("client-ca.pem"), "--cert-reqs", "1")
    ctx = certs.context(client_cert=True)
    with tls_socket(s.port, ctx) as t:
        t.sendall(GET_ENVIRON)
        assert json.loads(read_until_close(t).partition(b"\r\n\r\n")[2])["SSL_CLIENT_VERIFY"] == "SUCCESS"
        session = t.session
    old = set(wait_until(lambda: (k := children(s.proc.pid)) and len(k) == 1 and k))
    if change == "certificate":
        certs.write_server(certs.leaf_again())
    else:
        other = trustme.CA()
        other.cert_pem.write_to_path(certs.path("client-ca.pem"))
    s.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: (k := set(children(s.proc.pid))) and len(k) == 1 and not k & old
               and all(serving(p) for p in k), timeout=30)
    if change == "certificate":
        with tls_socket(s.port, ctx, session=session) as t:
            t.sendall(GET_ENVIRON)
            read_until_close(t)
            assert not t.session_reused
    else:
        # Optional client certificates: the client's, from a CA no longer listed, is refused.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with tls_socket(s.port, ctx, session=session) as t:
                t.sendall(GET_ENVIRON)
                read_until_close(t)

def served_by(s_client_output: str) -> int:
    """The worker pid in an /environ answer that s_client printed among its own lines."""
    m = re.search(r'"pid": ?(\d+)', s_client_output)
    assert m, s_client_output
    return int(m.group(1))


@pytest.mark.parametrize("version", [("-tls1_2",), ("-tls1_3",), ("-tls1_2", "-no_ticket")],
                         ids=["tls1_2-ticket", "tls1_3-ticket", "tls1_2-session-id"])
@pytest.mark.xfail(REFERENCE, strict=True, reason="gunicorn closes without a close_notify, so OpenSSL drops "
                   "the session")
def test_resumption_openssl_on_every_worker(tls, certs, tmp_path, version):
    # One saved session (-sess_out), then s_client -sess_in on connections held open
    # together so that several workers answer: each says Reused and which pid served it.
    # `-no_ticket`: a TLS 1.2 session ID, which the workers find in the table they share.
    s = tls("-w", "4")
    sess = str(tmp_path / "session.pem")
    first = s_client(s.port, certs, *version, "-sess_out", sess, request=GET_ENVIRON)
    assert "HTTP/1.1 200 OK" in first and os.path.getsize(sess) > 0
    first_pid = served_by(first)
    resumed_by = set()
    for _ in range(20):
        outs = s_clients(8, s.port, certs, *version, "-sess_in", sess, request=GET_ENVIRON)
        for out in outs:
            assert "Reused, TLSv1." in out and "HTTP/1.1 200 OK" in out, out
            resumed_by.add(served_by(out))
        if len(resumed_by - {first_pid}) >= 2:
            break
    if resumed_by == {first_pid}:
        pytest.skip("every connection reached the worker that made the session: nothing shown")


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


@pytest.mark.xfail(REFERENCE, strict=True, reason="gunicorn gives the app no SSL_CLIENT_* keys")
def test_mtls_environ(tls, certs):
    s = tls("--ca-certs", certs.path("client-ca.pem"), "--cert-reqs", "2")
    _, _, body = fetch(s.port, certs.context(client_cert=True), path="/environ")
    env = json.loads(body)
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert "CN=test client" in env["SSL_CLIENT_S_DN"]
    assert env["SSL_CLIENT_CERT"].startswith("-----BEGIN CERTIFICATE-----")
    assert env["SSL_CLIENT_I_DN"] and env["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3") and env["SSL_CIPHER"]


@pytest.mark.xfail(REFERENCE, strict=True, reason="gunicorn gives the app no SSL_CLIENT_* keys")
def test_mtls_optional_without_certificate(tls, certs):
    s = tls("--ca-certs", certs.path("client-ca.pem"), "--cert-reqs", "1")
    env = json.loads(fetch(s.port, certs.context(), path="/environ")[2])
    assert env["SSL_CLIENT_VERIFY"] == "NONE" and "SSL_CLIENT_CERT" not in env
    env = json.loads(fetch(s.port, certs.context(client_cert=True), path="/environ")[2])
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
