"""ferrule `--protocol uwsgi` behind a real nginx `uwsgi_pass`, configured as docs/deploy.md
("nginx `uwsgi_pass`") says, with the distribution's own `uwsgi_params`: a Flask app and a
Django app, each mounted under `/app` (`uwsgi_param SCRIPT_NAME /app`) and reached over TCP
and over a unix socket.

Clients connect from 127.0.0.2 so that the client's address (what nginx sends as
REMOTE_ADDR) differs from nginx's own side of the upstream socket (127.0.0.1, or none on a
unix socket).

`FERRULE_E2E_REFERENCE=uwsgi` runs the same tests against uWSGI itself (`pip install uwsgi`),
mounted as its users mount apps (`--mount /app=... --manage-script-name`): the check that
the tests ask what nginx and a uwsgi server really do (its request log stands in for ferrule's).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import APPS, Server, free_port, parse, wait_for_port, wait_until
from .front_support import CLIENT, Nginx, nginx_conf, request
from .front_support import get_json as front_get_json

pytest.importorskip("flask")
pytest.importorskip("django")
sys.path.insert(0, str(APPS))
from front_parts import FIRST, SECOND  # noqa: E402

# nginx resolves a relative `include` against the directory of the `-c` file, which is a
# temporary one here: the same file the docs' `include uwsgi_params;` names, by its path.
UWSGI_PARAMS = "/etc/nginx/uwsgi_params"
REFERENCE = os.environ.get("FERRULE_E2E_REFERENCE") == "uwsgi"
LIMIT = 12 * 1024 * 1024  # --limit-request-body
UPLOAD = 10 * 1024 * 1024
DOWNLOAD = os.urandom(3 * 1024 * 1024 + 17)
APP_TARGETS = {"flask": "front_flask:app", "django": "front_django:application"}
VIAS = ["tcp", "unix"]

# The docs' locations (docs/deploy.md), per front port: `{upstream}` is an `upstream` block.
LOCATIONS = """
        location /app/ {{
            include {params};
            uwsgi_param SCRIPT_NAME /app;{extra}
            uwsgi_pass {upstream};
        }}
        location /app/stream/ {{
            include {params};
            uwsgi_param SCRIPT_NAME /app;{extra}
            uwsgi_pass {upstream};
            uwsgi_buffering off;
            uwsgi_read_timeout 60s;
        }}
"""

def front_conf(tmp: Path, apps: dict, fronts: dict) -> str:
    """Two upstreams per app (its TCP port, its unix socket); a front server per app and
    way in: `tcp`, `unix`, and `https` (TCP, as when TLS ended before nginx:
    `uwsgi_param HTTPS on`)."""
    upstreams, servers = [], []
    for name, server in apps.items():
        upstreams.append(f"    upstream {name}_tcp {{ server 127.0.0.1:{server.port}; }}")
        upstreams.append(f"    upstream {name}_unix {{ server unix:{server.sock}; }}")
        for via in (*VIAS, "https"):
            upstream = f"{name}_{'unix' if via == 'unix' else 'tcp'}"
            extra = "\n            uwsgi_param HTTPS on;" if via == "https" else ""
            servers.append(f"    server {{\n        listen 127.0.0.1:{fronts[name, via]};\n"
                           f"        server_name localhost;"
                           + LOCATIONS.format(params=UWSGI_PARAMS, upstream=upstream, extra=extra) + "    }")
    inside = "    client_max_body_size 20m;\n" + "\n".join(upstreams) + "\n" + "\n".join(servers)
    return nginx_conf(tmp, inside)


class Reference:
    """uWSGI itself serving the app under /app on a TCP port and a unix socket."""

    def __init__(self, target: str, sock: Path, tmp: Path, env: dict):
        self.port = free_port()
        self.errlog = tmp / f"uwsgi-{self.port}.log"
        exe = Path(sys.executable).parent / "uwsgi"
        cmd = [str(exe), "--socket", f"127.0.0.1:{self.port}", "--socket", str(sock), "--chdir", str(APPS),
               "--mount", f"/app={target}", "--manage-script-name", "--threads", "4", "--limit-post", str(LIMIT),
               "--buffer-size", "65535", "--max-vars", "1000", "--die-on-term", "--need-app"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.errlog, "wb"),
                                     env={**os.environ, **env})
        wait_for_port(self.port, self.proc)

    def log(self) -> str:
        return self.errlog.read_text(errors="replace")

    out = log  # uWSGI's request log is on stderr too


class Front:
    """The app servers and the nginx in front of them."""

    def __init__(self):
        self.apps = {}
        self.ports = {}
        self.nginx = None

    def port(self, app: str, via: str) -> int:
        return self.ports[app, via]

    def error_lines(self) -> list[str]:
        return self.nginx.error_lines() if self.nginx else []


def start_app(name: str, tmp: Path):
    sock = tmp / f"{name}.sock"
    env = {"FRONT_DOWNLOAD": str(tmp / "download.bin")}
    if REFERENCE:
        server = Reference(APP_TARGETS[name], sock, tmp, env)
    else:
        server = Server(APP_TARGETS[name], ["--protocol", "uwsgi", "-b", f"unix:{sock}", "--access-logfile", "-",
                                            "--limit-request-body", str(LIMIT)], tmp, env)
    server.sock = sock
    deadline = time.monotonic() + 15
    while not sock.exists():
        assert time.monotonic() < deadline and server.proc.poll() is None, f"{name}: no unix socket {sock}"
        time.sleep(0.05)
    return server


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if REFERENCE and not (Path(sys.executable).parent / "uwsgi").exists():
        pytest.fail("FERRULE_E2E_REFERENCE=uwsgi needs uwsgi in this venv (pip install uwsgi)")
    tmp = tmp_path_factory.mktemp("uwsgi-nginx")
    (tmp / "download.bin").write_bytes(DOWNLOAD)
    front = Front()
    try:
        for name in APP_TARGETS:
            front.apps[name] = start_app(name, tmp)
        front.ports = {(name, via): free_port() for name in APP_TARGETS for via in (*VIAS, "https")}
        front.nginx = Nginx(tmp, front_conf(tmp, front.apps, front.ports), list(front.ports.values()))
        yield front
    finally:
        if front.nginx is not None:
            front.nginx.stop()
        for server in front.apps.values():
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()


@pytest.fixture
def front(stack):
    """The stack, and afterwards: nginx logged no error while the test ran (it logs an
    upstream that reset, closed early or answered what it cannot parse as `[error]`)."""
    before = len(stack.error_lines())
    yield stack
    assert stack.error_lines()[before:] == []


def get_json(port: int, path: str, **kw) -> dict:
    return front_get_json(port, path, **kw)[0]


def raw(port: int, data: bytes) -> bytes:
    """Sends bytes from CLIENT and reads until nginx closes (bounded by the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(CLIENT, 0)) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def path_bytes(app: str, value: str) -> bytes:
    """The bytes a path in the environ the app saw stands for: a PEP 3333 (latin-1) string,
    except that Django puts PATH_INFO back into its META decoded as UTF-8."""
    return value.encode("utf-8" if app == "django" else "latin-1")


apps_and_vias = pytest.mark.parametrize("app,via", [(a, v) for a in APP_TARGETS for v in VIAS])


@apps_and_vias
def test_mounted_under_script_name(front, app, via):
    port = front.port(app, via)
    for _ in range(100):  # nginx opens a connection per request to a uwsgi upstream
        assert get_json(port, "/app/items/42") == {"id": 42, "path_info": "/items/42", "script_root": "/app"}
    index = get_json(port, "/app/")
    assert index == {"url": "/app/items/7", "external": "http://localhost/app/items/7", "path_info": "/",
                     "script_root": "/app"}
    env = get_json(port, "/app/env/x")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["REQUEST_URI"]) == ("/app", "/env/x", "/app/env/x")
    assert env["wsgi.url_scheme"] == "http"
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["HTTP_HOST"]) == ("localhost", str(port), "localhost")
    # Variables an app has no use for pass through as nginx sent them.
    assert (env["REQUEST_SCHEME"], env["DOCUMENT_ROOT"]) == ("http", "/usr/share/nginx/html")


@pytest.mark.parametrize("app", list(APP_TARGETS))
def test_https_on_makes_the_scheme_https(front, app):
    port = front.port(app, "https")
    assert get_json(port, "/app/")["external"] == "https://localhost/app/items/7"
    env = get_json(port, "/app/env/")
    assert (env["wsgi.url_scheme"], env["HTTPS"]) == ("https", "on")


@apps_and_vias
def test_upload_of_10_mb_arrives_intact(front, app, via):
    body = os.urandom(UPLOAD)
    status, _, reply, _ = request(front.port(app, via), "POST", "/app/upload", body,
                                  {"Content-Type": "application/octet-stream"})
    assert status == 200, reply[:300]
    assert json.loads(reply) == {"size": UPLOAD, "sha256": hashlib.sha256(body).hexdigest()}


@apps_and_vias
@pytest.mark.xfail(REFERENCE, reason="uWSGI's --limit-post closes without reading the body: nginx, still "
                   "sending it, gets a reset and answers 502", strict=True)
def test_a_body_over_the_limit_is_413(front, app, via):
    # nginx sends the whole body before it reads the answer: a server that answers 413
    # and closes with the body unread resets the connection, and nginx answers 502.
    status, _, reply, _ = request(front.port(app, via), "POST", "/app/upload", b"z" * (LIMIT + 1),
                                  {"Content-Type": "application/octet-stream"})
    assert status == 413, reply[:300]
    # The server is still serving.
    assert get_json(front.port(app, via), "/app/items/1")["id"] == 1


@pytest.mark.skipif(REFERENCE, reason="ferrule's log line")
def test_the_413_log_line_names_the_client(front):
    port, server = front.port("flask", "tcp"), front.apps["flask"]
    status, _, _, client_port = request(port, "POST", "/app/upload", b"z" * (LIMIT + 1))
    assert status == 413
    wait_until(lambda: "request body too large" in server.log())
    assert f"invalid uwsgi request from {CLIENT}" in server.log()


@apps_and_vias
def test_streamed_blocks_reach_the_client_as_they_are_made(front, app, via):
    # `uwsgi_buffering off`: nginx passes each block on as it arrives. The app yields its
    # second block only once this test has read the first and released it.
    port, key = front.port(app, via), uuid.uuid4().hex
    with socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(CLIENT, 0)) as s:
        s.sendall(f"GET /app/stream/{key} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        got = b""
        while FIRST not in got:
            chunk = s.recv(65536)
            assert chunk, f"closed before the first block: {got!r}"
            got += chunk
        assert SECOND not in got
        status, _, released, _ = request(port, "POST", f"/app/release/{key}", b"")
        assert (status, released) == (200, b"released")
        while chunk := s.recv(65536):
            got += chunk
    status, headers, body = parse(got)
    assert (status, body) == (200, FIRST + SECOND)


@apps_and_vias
def test_a_file_through_wsgi_file_wrapper(front, app, via):
    status, headers, body, _ = request(front.port(app, via), "GET", "/app/download")
    assert (status, headers["content-length"], hashlib.sha256(body).digest()) == (
        200, str(len(DOWNLOAD)), hashlib.sha256(DOWNLOAD).digest())


@apps_and_vias
def test_an_app_error_is_500_without_its_details(front, app, via):
    status, _, body, _ = request(front.port(app, via), "GET", "/app/boom")
    assert status == 500 and b"secret" not in body
    assert get_json(front.port(app, via), "/app/items/3")["id"] == 3
    if app == "flask":  # Django with DEBUG off logs it to its admins, not to stderr
        wait_until(lambda: "RuntimeError: flask secret" in front.apps[app].log())


@apps_and_vias
def test_non_ascii_and_encoded_slash_in_the_path(front, app, via):
    # nginx decodes the path once (PATH_INFO is $document_uri); the server must not decode
    # it again (`%25` stays `%`), and REQUEST_URI is the client's, raw.
    port = front.port(app, via)
    uri = "/app/env/caf%C3%A9/a%2Fb/100%25?x=%2F&y=%C3%A9"
    env = get_json(port, uri)
    assert path_bytes(app, env["PATH_INFO"]) == "/env/café/a/b/100%".encode()
    assert (env["SCRIPT_NAME"], env["REQUEST_URI"], env["QUERY_STRING"]) == ("/app", uri, "x=%2F&y=%C3%A9")
    # Raw UTF-8 bytes in the request line (some clients send them unescaped).
    reply = raw(port, "GET /app/env/été HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    status, _, body = parse(reply)
    assert status == 200, reply[:300]
    env = json.loads(body)
    assert path_bytes(app, env["PATH_INFO"]) == "/env/été".encode()
    assert env["REQUEST_URI"].encode("latin-1") == "/app/env/été".encode()


@apps_and_vias
def test_many_headers(front, app, via):
    # About 20 KB of variables: more than the 4 KiB a uwsgi server reads by default
    # (uWSGI's --buffer-size), less than nginx's own 32 KB for a request head. 98 fields
    # with the client's Host and Accept-Encoding: within `--limit-request-fields` (100), which
    # counts the request's header fields as over HTTP, not nginx's other variables.
    headers = {f"X-Field-{i:03d}": f"{i:03d}-" + "v" * 200 for i in range(98)}
    env = get_json(front.port(app, via), "/app/env/", headers=headers)
    assert {k: env.get(f"HTTP_{k.upper().replace('-', '_')}") for k in headers} == headers


@apps_and_vias
def test_head(front, app, via):
    port = front.port(app, via)
    status, got, body, _ = request(port, "GET", "/app/items/5")
    status_head, head, body_head, _ = request(port, "HEAD", "/app/items/5")
    assert (status_head, body_head) == (status, b"")
    assert head["content-length"] == got["content-length"] == str(len(body))
    assert head["content-type"] == got["content-type"] == "application/json"


@apps_and_vias
def test_the_client_sees_nginx_s_server_and_one_date(front, app, via):
    # nginx passes a uwsgi upstream's Server and Date on; ferrule writes neither in uwsgi
    # mode, so the client sees nginx's own, once.
    reply = raw(front.port(app, via), b"GET /app/items/9 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    fields = [line.split(b":")[0].lower() for line in reply.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]]
    assert reply.startswith(b"HTTP/1.1 200 ") and b"\r\nServer: nginx" in reply
    assert (fields.count(b"server"), fields.count(b"date")) == (1, 1)


@apps_and_vias
def test_the_client_address_is_the_one_nginx_sent(front, app, via):
    port, marker = front.port(app, via), uuid.uuid4().hex
    status, _, body, client_port = request(port, "GET", f"/app/env/{marker}")
    assert status == 200
    env = json.loads(body)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == (CLIENT, str(client_port))
    server = front.apps[app]
    if REFERENCE:
        wait_until(lambda: f"] {CLIENT} () " in server.log() and marker in server.log())
    else:
        # The access log's %(h)s is the client too, not nginx's side of the socket.
        wait_until(lambda: any(line.startswith(f"{CLIENT} ") and f"GET /app/env/{marker} HTTP/1.1\" 200" in line
                               for line in server.out().splitlines()))


def test_the_docs_show_this_configuration():
    # docs/deploy.md's nginx block has these very locations (with `include uwsgi_params;` and
    # an upstream named myapp), so what the docs tell users to write is what runs above.
    docs = (Path(__file__).parents[2] / "docs" / "deploy.md").read_text()
    section = docs.split("## nginx `uwsgi_pass`", 1)[1].split("\n## ", 1)[0]
    block = section.split("```nginx", 1)[1].split("```", 1)[0]
    ours = LOCATIONS.format(params="uwsgi_params", upstream="myapp", extra="")
    lines = [line.split("#")[0].strip() for line in block.splitlines()]
    assert " ".join(filter(None, lines)).count(" ".join(line.strip() for line in ours.split("\n") if line.strip())) == 1
