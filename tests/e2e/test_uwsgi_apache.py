"""ferrule `--protocol uwsgi` behind a real Apache `mod_proxy_uwsgi`, configured with the line
docs/deploy.md ("Apache `mod_proxy_uwsgi`") shows: `ProxyPass /app uwsgi://127.0.0.1:PORT/`.
Apache splits the path itself (SCRIPT_NAME the `ProxyPass` prefix, PATH_INFO the rest),
sends its CGI variables, and needs a body's length. Clients connect from 127.0.0.2, so the
client's address differs from Apache's end of the upstream socket."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import APPS, Server, free_port, parse, wait_for_port, wait_until
from .front_support import CLIENT, get_json, request

pytest.importorskip("flask")
sys.path.insert(0, str(APPS))
from front_parts import FIRST, SECOND  # noqa: E402

APACHE = Path("/usr/sbin/apache2")
MODULES = Path("/usr/lib/apache2/modules")

CONF = """
ServerRoot {tmp}
Listen 127.0.0.1:{port}
PidFile {tmp}/httpd.pid
ErrorLog {tmp}/error.log
LogLevel warn
# Apache started as root serves as this user, as a packaged one does.
User nobody
Group nogroup
ServerName localhost
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule proxy_module {modules}/mod_proxy.so
LoadModule proxy_uwsgi_module {modules}/mod_proxy_uwsgi.so
{proxy_pass}
"""


def docs_proxy_pass() -> str:
    """The `ProxyPass` line of docs/deploy.md's Apache section."""
    docs = (Path(__file__).parents[2] / "docs" / "deploy.md").read_text()
    section = docs.split("## Apache `mod_proxy_uwsgi`", 1)[1].split("\n## ", 1)[0]
    block = section.split("```apache", 1)[1].split("```", 1)[0]
    return next(line for line in block.splitlines() if line.startswith("ProxyPass "))


@pytest.fixture(scope="module")
def apache(tmp_path_factory):
    if not APACHE.exists():
        pytest.fail("apache2 is not installed (make test installs it)")
    tmp = tmp_path_factory.mktemp("uwsgi-apache")
    download = tmp / "download.bin"
    download.write_bytes(os.urandom(1 << 20))
    app = Server("front_flask:app", ["--protocol", "uwsgi", "--access-logfile", "-"], tmp,
                 {"FRONT_DOWNLOAD": str(download)})
    port = free_port()
    proxy_pass = docs_proxy_pass().replace("127.0.0.1:8001", f"127.0.0.1:{app.port}")
    (tmp / "httpd.conf").write_text(CONF.format(tmp=tmp, port=port, modules=MODULES, proxy_pass=proxy_pass))
    proc = subprocess.Popen([str(APACHE), "-f", str(tmp / "httpd.conf"), "-DFOREGROUND"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            wait_for_port(port, proc, timeout=15)
        except RuntimeError:
            raise RuntimeError(f"apache did not start: {proc.stderr.read().decode(errors='replace')}") from None
        yield port, app, download.read_bytes()
    finally:
        proc.terminate()
        proc.wait(15)
        app.proc.kill()
        app.proc.wait()
    # Apache logs an upstream that reset, closed early or answered what it cannot parse.
    log = (tmp / "error.log").read_text(errors="replace").splitlines()
    assert [line for line in log if re.search(r":(error|crit|alert|emerg)\]", line)] == []


def test_mounted_at_the_proxy_pass_prefix(apache):
    port, app, _ = apache
    index, _ = get_json(port, "/app/")
    assert index == {"url": "/app/items/7", "external": "http://localhost/app/items/7", "path_info": "/",
                     "script_root": "/app"}
    assert get_json(port, "/app/items/42")[0] == {"id": 42, "path_info": "/items/42", "script_root": "/app"}
    env, client_port = get_json(port, "/app/env/caf%C3%A9?q=%C3%A9")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"].encode("latin-1")) == ("/app", "/env/café".encode())
    assert (env["REQUEST_URI"], env["QUERY_STRING"]) == ("/app/env/caf%C3%A9?q=%C3%A9", "q=%C3%A9")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == (CLIENT, str(client_port))
    assert env["wsgi.url_scheme"] == "http"
    wait_until(lambda: any(line.startswith(f"{CLIENT} ") and '"GET /app/env/caf%C3%A9?q=%C3%A9 HTTP/1.1" 200' in line
                           for line in app.out().splitlines()))


def test_upload_and_download(apache):
    port, _, download = apache
    body = os.urandom(10 * 1024 * 1024)
    status, _, reply, _ = request(port, "POST", "/app/upload", body, {"Content-Type": "application/octet-stream"})
    assert (status, json.loads(reply)) == (200, {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})
    status, _, got, _ = request(port, "GET", "/app/download")
    assert (status, hashlib.sha256(got).digest()) == (200, hashlib.sha256(download).digest())


def test_a_chunked_upload_is_refused_by_apache(apache):
    # mod_proxy_uwsgi needs the body's length (the uwsgi packet's CONTENT_LENGTH): Apache
    # answers 411 itself, as docs/deploy.md says.
    port, app, _ = apache
    status, _, _, _ = request(port, "POST", "/app/upload", iter([b"abc", b"def"]),
                              {"Transfer-Encoding": "chunked"})
    assert status == 411


def test_streamed_blocks_reach_the_client_as_they_are_made(apache):
    port, _, _ = apache
    key = uuid.uuid4().hex
    with socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(CLIENT, 0)) as s:
        s.sendall(f"GET /app/stream/{key} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        got = b""
        while FIRST not in got:
            chunk = s.recv(65536)
            assert chunk, f"closed before the first block: {got!r}"
            got += chunk
        assert SECOND not in got
        assert request(port, "POST", f"/app/release/{key}", b"")[:3:2] == (200, b"released")
        while chunk := s.recv(65536):
            got += chunk
    status, _, body = parse(got)
    assert (status, body) == (200, FIRST + SECOND)


def test_head(apache):
    port, _, _ = apache
    status, got, body, _ = request(port, "GET", "/app/items/5")
    status_head, head, body_head, _ = request(port, "HEAD", "/app/items/5")
    assert (status_head, body_head, head["content-length"]) == (status, b"", str(len(body)))
