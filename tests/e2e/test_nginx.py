"""ferrule behind a real nginx, configured as docs/deploy.md says: a connection per request
over TCP (nginx's default towards an upstream), and a unix socket with upstream keep-alive."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from conftest import free_port
from .front_support import Nginx, nginx_conf

HTTP = """
    upstream pooled {{
        server unix:{sock};
        keepalive 8;
    }}
    # docs/deploy.md: the client's Host with its port, or the server's name without one.
    map $http_host $upstream_host {{
        "" $host;
        default $http_host;
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        client_max_body_size 10m;
        location /rawhost/ {{
            proxy_pass http://pooled/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
        location /maphost/ {{
            proxy_pass http://pooled/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $upstream_host;
        }}
        location /tcp/ {{
            proxy_pass http://127.0.0.1:{upstream}/;
        }}
        location /unix/ {{
            proxy_pass http://pooled/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}
"""


@pytest.fixture
def nginx(serve, tmp_path):
    """ferrule on a TCP port and a unix socket, nginx in front of both; yields nginx's port
    and the ferrule server, and checks afterwards that nginx logged no error."""
    sock = tmp_path / "app.sock"
    app = serve("routes:app", "-b", f"unix:{sock}", "--access-logfile", "-")
    port = free_port()
    servers = HTTP.format(sock=sock, port=port, upstream=app.port)
    front = Nginx(tmp_path, nginx_conf(tmp_path, servers), [port])
    yield port, app
    front.stop()
    assert front.error_lines() == []


def fetch(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None):
    conn.request(method, path, body=body)
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_a_connection_per_request_over_tcp(nginx):
    port, app = nginx
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(200):
        assert fetch(conn, "GET", "/tcp/hello") == (200, b"Hello, World!")
    body = bytes(range(256)) * 4096  # 1 MiB, every byte value
    assert fetch(conn, "POST", "/tcp/echo", body) == (200, body)
    seen = [json.loads(fetch(conn, "GET", "/tcp/environ")[1]) for _ in range(2)]
    # nginx speaks HTTP/1.0 to an upstream by default and opens a connection per request.
    assert [e["SERVER_PROTOCOL"] for e in seen] == ["HTTP/1.0", "HTTP/1.0"]
    assert seen[0]["REMOTE_PORT"] != seen[1]["REMOTE_PORT"]
    assert app.out().count('"GET /hello HTTP/1.0" 200') == 200


def test_a_unix_socket_with_upstream_keep_alive(nginx):
    port, app = nginx
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(200):
        assert fetch(conn, "GET", "/unix/hello") == (200, b"Hello, World!")
    body = b"x" * 300_000
    assert fetch(conn, "POST", "/unix/echo", body) == (200, body)
    env = json.loads(fetch(conn, "GET", "/unix/environ")[1])
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == ""
    assert env["wsgi.url_scheme"] == "https", "X-Forwarded-Proto from nginx is not trusted on a unix socket"
    assert app.out().count('"GET /hello HTTP/1.1" 200') == 200
    assert "error" not in app.log().lower()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(request)
        reply = b""
        while chunk := c.recv(65536):
            reply += chunk
    return reply


def test_host_through_nginx_to_an_http11_upstream(nginx):
    # An HTTP/1.0 client may send no Host. `proxy_set_header Host $http_host` then sends
    # none either, and an HTTP/1.1 request without Host is 400 (RFC 9112 §3.2); the map in
    # docs/deploy.md sends the server's name instead and keeps a client's port.
    port, app = nginx
    bare = _raw(port, b"GET /rawhost/environ HTTP/1.0\r\n\r\n")
    assert bare.startswith(b"HTTP/1.1 400 "), bare[:200]
    mapped = _raw(port, b"GET /maphost/environ HTTP/1.0\r\n\r\n")
    assert mapped.startswith(b"HTTP/1.1 200 "), mapped[:200]
    assert json.loads(mapped.partition(b"\r\n\r\n")[2])["HTTP_HOST"] == "localhost"
    ported = _raw(port, b"GET /maphost/environ HTTP/1.0\r\nHost: example.com:8080\r\n\r\n")
    env = json.loads(ported.partition(b"\r\n\r\n")[2])
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com:8080", "example.com", "8080")
