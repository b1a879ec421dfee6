"""--proxy-protocol with the real senders, started here on loopback: HAProxy (send-proxy and
send-proxy-v2, mode tcp and mode http) and nginx's stream module (proxy_protocol on), then
raw v1/v2 bytes for what those never send, keep-alive and pipelining after one header, the
access log's %(h)s, every refusal, and the header timeout.

The real clients connect from other loopback addresses (127.0.0.5...) than the front
server's (127.0.0.1), so REMOTE_ADDR tells the header's client from the socket's peer."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import APPS, free_port, wait_until

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
LOG_FORMAT = "%(h)s %(r)s %(s)s"

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIG + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def v2_tcp4(src: str, sport: int, dst: str, dport: int, tlvs: bytes = b"") -> bytes:
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return v2(1, 0x11, addrs + tlvs)


def v2_tcp6(src: str, sport: int, dst: str, dport: int) -> bytes:
    pton = lambda a: socket.inet_pton(socket.AF_INET6, a)  # noqa: E731
    return v2(1, 0x21, pton(src) + pton(dst) + struct.pack("!HH", sport, dport))


def environ_request(path: str = "/environ", close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"


def read_responses(sock: socket.socket, n: int) -> list:
    """Reads `n` responses with a Content-Length: [(status, body)]."""
    data, out = b"", []
    while len(out) < n:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            if len(rest) >= length:
                out.append((int(head.split()[1]), rest[:length]))
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(out)} response(s): {data!r}"
        data += chunk
    return out


def closed_without_answer(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Sends `data` and reads until the server closes (a reset counts as closed);
    returns what it answered, which a refusal leaves empty."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return b""
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk


@pytest.fixture
def proxied(serve):
    """ferrule with --proxy-protocol (extra flags appended), its access log on stdout."""
    def start(*flags: str):
        return serve("routes:app", "--proxy-protocol", *flags, "--access-logfile", "-",
                     "--access-logformat", LOG_FORMAT)
    return start


def access_lines(app) -> list:
    return [line for line in app.out().splitlines() if line.strip()]


# Raw bytes ---------------------------------------------------------------------------

def test_one_v1_header_serves_pipelined_and_kept_alive_requests(proxied):
    app = proxied()
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
        s.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 4321 443\r\n" + environ_request() + environ_request())
        first = read_responses(s, 2)
        s.sendall(environ_request())
        s.sendall(environ_request("/environ/last", close=True))
        rest = read_responses(s, 2)
    envs = [json.loads(body) for status, body in first + rest]
    assert [status for status, _ in first + rest] == [200] * 4
    assert {(e["REMOTE_ADDR"], e["REMOTE_PORT"]) for e in envs} == {("203.0.113.7", "4321")}
    wait_until(lambda: len(access_lines(app)) == 4)
    assert all(line.startswith("203.0.113.7 GET /environ") for line in access_lines(app))


@pytest.mark.parametrize("header, addr, port", [
    (b"PROXY TCP6 2001:db8::5 ::1 40000 80\r\n", "2001:db8::5", "40000"),
    (v2_tcp4("198.51.100.4", 1234, "127.0.0.1", 80), "198.51.100.4", "1234"),
    # TLVs after the addresses (ALPN, AUTHORITY, a NOOP) are skipped.
    (v2_tcp4("198.51.100.4", 1234, "127.0.0.1", 80, b"\x01\x00\x02h2\x02\x00\x03a.b\x04\x00\x00"),
     "198.51.100.4", "1234"),
    (v2_tcp6("2001:db8::9", 5555, "2001:db8::1", 443), "2001:db8::9", "5555"),
    # UNKNOWN, LOCAL and AF_UNSPEC keep the socket's own peer.
    (b"PROXY UNKNOWN\r\n", "127.0.0.1", None),
    (v2(0, 0x00, b""), "127.0.0.1", None),
    (v2(1, 0x00, b"\x00\x01"), "127.0.0.1", None),
])
def test_each_kind_of_header_sets_or_keeps_the_client(proxied, header, addr, port):
    app = proxied()
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
        s.sendall(header + environ_request(close=True))
        [(status, body)] = read_responses(s, 1)
        local_port = s.getsockname()[1]
    env = json.loads(body)
    assert status == 200
    assert env["REMOTE_ADDR"] == addr
    assert env["REMOTE_PORT"] == (port or str(local_port))
    wait_until(lambda: access_lines(app))
    assert access_lines(app) == [f"{addr} GET /environ HTTP/1.1 200"]


def test_the_mode_and_the_bare_flag(serve):
    # The bare flag is auto: both versions are taken.
    app = serve("routes:app", "--proxy-protocol")
    for header in (b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 80\r\n", v2_tcp4("192.0.2.1", 1000, "127.0.0.1", 80)):
        reply = closed_without_answer(app.port, header + environ_request(close=True))
        assert json.loads(reply.partition(b"\r\n\r\n")[2])["REMOTE_ADDR"] == "192.0.2.1"
    # Off (the default), a PROXY line is just a bad request line.
    plain = serve("routes:app")
    reply = closed_without_answer(plain.port, b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 80\r\n" + environ_request())
    assert reply.startswith(b"HTTP/1.1 400")


def test_an_invalid_request_after_the_header_is_logged_with_the_headers_client(proxied):
    app = proxied()
    reply = closed_without_answer(app.port, b"PROXY TCP4 192.0.2.77 127.0.0.1 1000 80\r\nGET / HTTP/9\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")
    wait_until(lambda: "invalid request from 192.0.2.77" in app.log())


@pytest.mark.parametrize("forwarded_allow, scheme", [("127.0.0.1", "https"), ("203.0.113.7", "http")])
def test_forwarded_allow_ips_judges_the_proxy_not_the_headers_client(proxied, forwarded_allow, scheme):
    app = proxied("--forwarded-allow-ips", forwarded_allow)
    request = b"GET /environ HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
    reply = closed_without_answer(app.port, b"PROXY TCP4 203.0.113.7 127.0.0.1 1000 80\r\n" + request)
    env = json.loads(reply.partition(b"\r\n\r\n")[2])
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("203.0.113.7", scheme)


V1_OK = b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 80\r\n"
V2_OK = v2_tcp4("192.0.2.1", 1000, "127.0.0.1", 80)


@pytest.mark.parametrize("flags, data, words", [
    ((), environ_request(), "no PROXY protocol header"),
    (("--proxy-allow-from", "10.0.0.0/8"), V1_OK + environ_request(), "peer outside --proxy-allow-from"),
    (("--proxy-allow-from", "10.0.0.0/8"), V2_OK + environ_request(), "peer outside --proxy-allow-from"),
    (("v1",), V2_OK + environ_request(), "a PROXY v2 header, and --proxy-protocol is v1"),
    (("v2",), V1_OK + environ_request(), "a PROXY v1 header, and --proxy-protocol is v2"),
    ((), b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 80\n" + environ_request(), "malformed PROXY v1 line"),
    ((), b"PROXY TCP4 192.0.2.300 127.0.0.1 1000 80\r\n" + environ_request(), "bad address"),
    ((), b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 65536\r\n" + environ_request(), "bad port"),
    ((), b"PROXY TCP6 " + b"1" * 120 + b"\r\n", "without CRLF within 107 bytes"),
    ((), V2_SIG + b"\x31\x11\x00\x0c" + b"\x00" * 12, "version other than 2"),
    # 17 bytes: the addresses, then a TLV that says 9 bytes and has 2.
    ((), V2_SIG + b"\x21\x11\x00\x11" + b"\x00" * 12 + b"\x01\x00\x09ab" + environ_request(),
     "TLV running past the header"),
])
def test_refusals_close_without_an_answer_and_say_why(proxied, flags, data, words):
    app = proxied(*flags)
    assert closed_without_answer(app.port, data) == b""
    wait_until(lambda: words in app.log())
    assert "refused a connection from 127.0.0.1" in app.log()
    assert access_lines(app) == []


def test_a_peer_outside_the_list_is_served_without_a_header(proxied):
    app = proxied("--proxy-allow-from", "10.0.0.0/8")
    reply = closed_without_answer(app.port, environ_request(close=True))
    assert reply.startswith(b"HTTP/1.1 200")
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["REMOTE_ADDR"] == "127.0.0.1"


def test_unix_socket_peers_count_as_allowed(proxied, tmp_path):
    sock_path = str(tmp_path / "app.sock")
    app = proxied("--proxy-allow-from", "10.0.0.0/8", "-b", f"unix:{sock_path}")

    def over_unix(data: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(sock_path)
            s.sendall(data)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    reply = over_unix(V1_OK + environ_request(close=True))
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["REMOTE_ADDR"] == "192.0.2.1"
    assert over_unix(environ_request(close=True)) == b""
    wait_until(lambda: "refused a connection from unix: no PROXY protocol header" in app.log())


def test_a_v2_length_past_the_data_closes_when_the_client_does(proxied):
    app = proxied()
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
        s.sendall(V2_SIG + b"\x21\x11\x00\x40" + b"\x00" * 12)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b""
    assert access_lines(app) == []


@pytest.mark.parametrize("sent", [b"PROXY TCP4 192.0.2.1", V2_SIG + b"\x21", b""])
def test_the_header_must_arrive_within_the_header_timeout(proxied, sent):
    app = proxied("--header-timeout", "0.5")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
        s.sendall(sent)
        try:
            got = s.recv(100)
        except ConnectionResetError:
            got = b""
    waited = time.monotonic() - started
    assert got == b"", got
    # A silent connection is accepted when TCP_DEFER_ACCEPT gives up (about a second).
    # The server counts on a coarse clock (a few ms a tick), in whole milliseconds.
    assert 0.48 <= waited < 8, waited
    if sent:
        wait_until(lambda: "did not send a complete PROXY header within --header-timeout" in app.log())
    assert access_lines(app) == []


def test_bad_values_are_one_line_and_exit_2(tmp_path):
    import sys
    for args in (["--proxy-protocol", "v3"], ["--proxy-protocol", "--proxy-allow-from", "10.0.0.1/8"]):
        proc = subprocess.run([sys.executable, "-m", "ferrule", "routes:app", "--chdir", str(APPS), *args,
                               "--check-config"],
                              capture_output=True, text=True, timeout=60)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.stderr)
        assert ("--proxy-protocol" if "v3" in args else "--proxy-allow-from") in lines[0]


def test_the_app_may_follow_the_bare_flag_as_with_gunicorn():
    import sys
    # gunicorn's --proxy-protocol takes no value, so its users write the app after it.
    proc = subprocess.run([sys.executable, "-m", "ferrule", "--chdir", str(APPS), "--proxy-protocol", "routes:app",
                           "--print-config"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    settings = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in proc.stdout.splitlines())}
    assert (settings["proxy_protocol"], settings["wsgi_app"]) == ("'auto'", "'routes:app'"), proc.stdout


def test_the_config_file_takes_gunicorns_values(serve, tmp_path):
    conf = tmp_path / "proxy.conf.py"
    conf.write_text("proxy_protocol = True\nproxy_allow_ips = '127.0.0.1'\n")
    app = serve("routes:app", "-c", str(conf))
    reply = closed_without_answer(app.port, V2_OK + environ_request(close=True))
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["REMOTE_ADDR"] == "192.0.2.1"


# The real senders --------------------------------------------------------------------

def start_front(argv: list, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{argv[0]} did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)


HAPROXY_CONF = """
global
    maxconn 256
defaults
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend tcp_v1
    mode tcp
    bind 127.0.0.1:{tcp_v1}
    default_backend tcp_v1
backend tcp_v1
    mode tcp
    server ferrule 127.0.0.1:{upstream} send-proxy check inter 100ms
frontend tcp_v2
    mode tcp
    bind 127.0.0.1:{tcp_v2}
    default_backend tcp_v2
backend tcp_v2
    mode tcp
    server ferrule 127.0.0.1:{upstream} send-proxy-v2
frontend http_v1
    mode http
    bind 127.0.0.1:{http_v1}
    default_backend http_v1
backend http_v1
    mode http
    option httpchk GET /hello
    server ferrule 127.0.0.1:{upstream} send-proxy check inter 100ms
frontend http_v2
    mode http
    bind 127.0.0.1:{http_v2}
    default_backend http_v2
backend http_v2
    mode http
    option httpchk GET /hello
    server ferrule 127.0.0.1:{upstream} send-proxy-v2 check inter 100ms
"""


@pytest.fixture
def haproxy(proxied, tmp_path):
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is not installed (make test installs it)")
    app = proxied()
    ports = {name: free_port() for name in ("tcp_v1", "tcp_v2", "http_v1", "http_v2")}
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(HAPROXY_CONF.format(upstream=app.port, **ports))
    proc = start_front([HAPROXY, "-db", "-f", str(conf)], ports["http_v2"], tmp_path / "haproxy.log")
    yield ports, app
    proc.terminate()
    proc.wait(10)


def through(port: int, source: str, n: int) -> list:
    """`n` requests on one keep-alive connection from `source`: their environs, and
    the client's port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    envs = []
    for i in range(n):
        conn.request("GET", f"/environ/{i}")
        resp = conn.getresponse()
        assert resp.status == 200
        envs.append(json.loads(resp.read()))
    client_port = conn.sock.getsockname()[1]
    conn.close()
    return envs, client_port


@pytest.mark.parametrize("front, source", [
    ("tcp_v1", "127.0.0.5"), ("tcp_v2", "127.0.0.6"), ("http_v1", "127.0.0.7"), ("http_v2", "127.0.0.8"),
])
def test_haproxy(haproxy, front, source):
    ports, app = haproxy
    envs, client_port = through(ports[front], source, 5)
    assert {(e["REMOTE_ADDR"], e["REMOTE_PORT"]) for e in envs} == {(source, str(client_port))}
    wait_until(lambda: sum(line.startswith(f"{source} GET /environ/") for line in access_lines(app)) == 5)


def test_haproxy_health_checks_send_the_header_too(haproxy):
    """A plain `check` (connect, close) and `option httpchk` on a server with send-proxy:
    HAProxy sends the header on its checks as well, and none is refused."""
    ports, app = haproxy
    wait_until(lambda: sum(" GET /hello " in line for line in access_lines(app)) >= 4)
    assert "refused" not in app.log()


NGINX_STREAM_CONF = """
load_module {module};
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 64; }}
stream {{
    server {{
        listen 127.0.0.1:{port};
        proxy_pass 127.0.0.1:{upstream};
        proxy_protocol on;
    }}
}}
"""


def test_nginx_stream_proxy_protocol(proxied, tmp_path):
    if not Path(NGINX).exists() or not STREAM_MODULE.exists():
        pytest.fail("nginx's stream module is not installed (make test installs libnginx-mod-stream)")
    app = proxied()
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_STREAM_CONF.format(module=STREAM_MODULE, tmp=tmp_path, port=port, upstream=app.port))
    proc = start_front([NGINX, "-c", str(conf), "-e", str(tmp_path / "nginx-error.log")], port,
                       tmp_path / "nginx.out")
    try:
        envs, client_port = through(port, "127.0.0.9", 5)
    finally:
        proc.terminate()
        proc.wait(10)
    assert {(e["REMOTE_ADDR"], e["REMOTE_PORT"]) for e in envs} == {("127.0.0.9", str(client_port))}
    wait_until(lambda: sum(line.startswith("127.0.0.9 GET /environ/") for line in access_lines(app)) == 5)
    errors = [line for line in (tmp_path / "nginx-error.log").read_text().splitlines() if "[error]" in line]
    assert errors == []
