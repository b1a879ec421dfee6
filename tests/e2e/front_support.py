"""The real front servers the e2e tests put before ferrule (nginx, Apache): where their
programs are, how a test configures, starts and stops nginx, and how a client talks to a
front from another loopback address, so that the client's address differs from the
front's own end of the upstream socket."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import wait_for_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

#: The address clients connect from: nginx and Apache see it, ferrule sees them.
CLIENT = "127.0.0.2"

# Every temp path under the test's directory: nginx must not need /var/lib/nginx.
NGINX_CONF = """
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    uwsgi_temp_path {tmp}/uwsgi;
{http}
}}
"""


def nginx_conf(tmp: Path, http: str, connections: int = 256) -> str:
    """A whole nginx.conf for a foreground nginx keeping its files in `tmp`; `http` is
    the inside of the `http` block (upstreams, servers, limits)."""
    return NGINX_CONF.format(tmp=tmp, http=http, connections=connections)


class Nginx:
    """nginx started on `conf` once it listens on every one of `ports`."""

    def __init__(self, tmp: Path, conf: str, ports: list[int]):
        if not Path(NGINX).exists():
            pytest.fail("nginx is not installed (make test installs it)")
        self.tmp = tmp
        (tmp / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen([NGINX, "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "nginx-error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for port in ports:
                wait_for_port(port, self.proc, timeout=10)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"nginx did not start: {self.proc.stderr.read().decode(errors='replace')}") from None

    def error_lines(self) -> list[str]:
        """nginx logs an upstream that reset, closed early or answered what it cannot
        parse as `[error]`."""
        log = self.tmp / "nginx-error.log"
        return [line for line in log.read_text().splitlines() if "[error]" in line] if log.exists() else []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One request from CLIENT to a front: (status, headers, body, the client's port)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20, source_address=(CLIENT, 0))
    try:
        conn.connect()
        client_port = conn.sock.getsockname()[1]
        conn.request(method, path, body=body, headers={"Host": "localhost", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read(), client_port
    finally:
        conn.close()


def get_json(port: int, path: str, **kw) -> tuple[dict, int]:
    """A GET that must answer 200 with JSON: (the JSON, the client's port)."""
    status, _, body, client_port = request(port, "GET", path, **kw)
    assert status == 200, (status, body[:300])
    return json.loads(body), client_port
