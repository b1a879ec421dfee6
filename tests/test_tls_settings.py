"""TLS settings beside the certificate: --ciphers, the bind schemes, and the gunicorn TLS
flags ferrule logs (issue 24, "Configuration"). The cipher mapping itself is tested in
crates/ferrule-server/src/tls_ciphers_tests.rs; here: that every way of giving a list
reaches it, and that a bad list is one line and exit 2."""

import http.client
import os
import socket
import subprocess
import sys

import pytest

from conftest import APPS, free_port, wait_for_port
from ferrule import gunicorn
from ferrule.settings import Settings

MOZILLA_INTERMEDIATE = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                        "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305")
TLS_FLAGS = ["--ssl-version", "TLSv1_2", "--do-handshake-on-connect", "--suppress-ragged-eofs"]
TLS_LINES = ("ssl_version = 'TLSv1_2' accepted: ferrule speaks TLS 1.2 and 1.3 only",
             "do_handshake_on_connect = True accepted: the server always completes the handshake",
             "suppress_ragged_eofs = True accepted: a client closing without close_notify")


def ferrule(*args, env=None, timeout=20):
    return subprocess.run([sys.executable, "-m", "ferrule", "routes:app", "--chdir", str(APPS), *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def one_error_line(r):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferrule: error: "), r.stderr
    return lines[0]


@pytest.mark.parametrize("ciphers", [MOZILLA_INTERMEDIATE, "HIGH:!aNULL:!MD5", "ECDHE+AESGCM:!aNULL", "TLSv1",
                                     "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", "DEFAULT:@STRENGTH"])
def test_real_lists_pass_check_config_from_the_flag_and_the_config_file(tmp_path, ciphers):
    r = ferrule("--ciphers", ciphers, "--check-config")
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(f"ciphers = {ciphers!r}\n")
    r = ferrule("-c", str(conf), "--check-config")
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr


def test_gunicorn_default_none_is_rustls_own_list(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("ciphers = None\n")
    r = ferrule("-c", str(conf), "--print-config")
    assert r.returncode == 0 and "\nciphers                      = None\n" in "\n" + r.stdout, r.stdout
    r = ferrule("--ciphers", "HIGH", "--print-config")
    assert "ciphers                      = 'HIGH'" in r.stdout


@pytest.mark.parametrize("ciphers", ["RC4:3DES", "DHE-RSA-AES128-GCM-SHA256", "AES128-SHA:AES256-SHA",
                                     "HIGH:!HIGH", "MEDIUM", "", "HIGH:@NOSUCH"])
def test_a_list_that_selects_nothing_is_one_line_and_exit_2(tmp_path, ciphers):
    for extra in ([], ["--check-config"]):
        line = one_error_line(ferrule("--ciphers", ciphers, "-b", f"127.0.0.1:{free_port()}", *extra))
        assert line.startswith(f"ferrule: error: ciphers {ciphers!r}".replace("'", '"')), line
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(f"ciphers = {ciphers!r}\n")
    line = one_error_line(ferrule("-c", str(conf), "--check-config"))
    assert "ciphers" in line and ("names none of the suites" in line or "@NOSUCH" in line), line
    line = one_error_line(ferrule("--check-config", env={"GUNICORN_CMD_ARGS": f"--ciphers={ciphers}"}))
    assert "ciphers" in line


def test_without_tls_the_tls_flags_are_accepted_silently():
    r = ferrule(*TLS_FLAGS, "--check-config")
    assert r.returncode == 0, r.stderr
    assert not any(line in r.stderr for line in TLS_LINES), r.stderr


def test_with_tls_each_tls_flag_is_one_info_line():
    cfg = Settings(bind=["https://127.0.0.1:8443", "http://127.0.0.1:8080"],
                   extra={"ssl_version": "TLSv1_2", "do_handshake_on_connect": True, "suppress_ragged_eofs": True})
    notes = gunicorn.tls_notes(cfg)
    assert len(notes) == 3 and all(n.startswith(want) for n, want in zip(notes, TLS_LINES)), notes
    assert gunicorn.tls_on(cfg) and cfg.is_ssl
    plain = Settings(bind=["http://127.0.0.1:8080"], extra=cfg.extra)
    assert gunicorn.tls_notes(plain) == [] and not plain.is_ssl
    assert gunicorn.tls_notes(Settings(bind=["https://127.0.0.1:8443"])) == []


@pytest.mark.skipif(gunicorn.BY_NAME["certfile"].status == gunicorn.REFUSED,
                    reason="needs --certfile, refused until the TLS transport (issue 24) is merged")
def test_with_a_certificate_the_tls_flags_are_logged_at_start_up(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    r = ferrule("--certfile", str(cert), "--keyfile", str(key), *TLS_FLAGS, "--check-config")
    assert r.returncode == 0, r.stderr
    for line in TLS_LINES:
        assert r.stderr.count(line) == 1, r.stderr


# The bind schemes ------------------------------------------------------------------

def test_https_bind_without_a_certificate_is_one_line_and_exit_2():
    line = one_error_line(ferrule("-b", "https://127.0.0.1:8443", "--check-config"))
    assert 'bind "https://127.0.0.1:8443": https needs --certfile and --keyfile' in line
    line = one_error_line(ferrule("-b", "https+unix:/tmp/ferrule-x.sock", "--check-config"))
    assert 'bind "https+unix:/tmp/ferrule-x.sock": https needs --certfile' in line


@pytest.mark.parametrize("bind", ["https://", "https+tcp://127.0.0.1:1", "http+unix:", "https://127.0.0.1:1/app"])
def test_malformed_scheme_binds_are_one_line(bind):
    line = one_error_line(ferrule("-b", bind, "--check-config"))
    assert f'bind "{bind}"' in line, line


def test_http_binds_serve_plain_http_beside_each_other(tmp_path):
    port, sock = free_port(), tmp_path / "health.sock"
    proc = subprocess.Popen([sys.executable, "-m", "ferrule", "routes:app", "--chdir", str(APPS),
                             "-b", f"http://127.0.0.1:{port}/", "-b", f"http+unix:{sock}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, proc)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/hello")
        assert c.getresponse().status == 200
        c.close()
        with socket.socket(socket.AF_UNIX) as u:
            u.settimeout(5)
            u.connect(str(sock))
            u.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert u.makefile("rb").readline().startswith(b"HTTP/1.1 200")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert f"Listening at: http://127.0.0.1:{port}" in err and f"Listening at: unix:{sock}" in err, err
