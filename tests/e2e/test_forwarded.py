"""The scheme and the client's address from trusted proxies (docs/http.md, "Client address
and scheme"): gunicorn's secure_scheme_headers from a config file, RFC 7239 Forwarded,
--forwarded-remote-addr over several hops, untrusted peers, malformed lists, the access log,
and a real nginx appending to X-Forwarded-For."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys

import pytest

from conftest import APPS, free_port, wait_until
from .front_support import Nginx, nginx_conf

# Loopback is 127.0.0.0/8: a client bound to 127.0.0.2 is a peer outside "127.0.0.1".
OTHER = "127.0.0.2"


def environ(port, headers=(), source=None, conn=None):
    """GET /environ with `headers` (a list of pairs, repeats allowed): (status, environ or body)."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                           source_address=(source, 0) if source else None)
    c.putrequest("GET", "/environ")
    for name, value in headers:
        c.putheader(name, value)
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    if conn is None:
        c.close()
    return r.status, (json.loads(body) if r.status == 200 else body)


def scheme(port, *headers, source=None):
    status, env = environ(port, headers, source)
    return env["wsgi.url_scheme"] if status == 200 else status


def remote(port, *headers, source=None):
    status, env = environ(port, headers, source)
    assert status == 200, env
    return env["REMOTE_ADDR"], env["REMOTE_PORT"]


def test_a_custom_secure_scheme_headers_table_from_a_config_file(serve, tmp_path):
    conf = tmp_path / "scheme.conf.py"
    # A lower-case name works too (gunicorn would only match upper-case keys).
    conf.write_text("secure_scheme_headers = {'X-SCHEME': 'https', 'front-end-https': 'on'}\n")
    s = serve("routes:app", "-c", str(conf))
    assert scheme(s.port, ("X-Scheme", "https")) == "https"
    assert scheme(s.port, ("Front-End-Https", "on")) == "https"
    assert scheme(s.port, ("X-Scheme", "http")) == "http"
    # Values are exact, as in gunicorn.
    assert scheme(s.port, ("X-Scheme", "HTTPS")) == "http"
    # gunicorn's default headers mean nothing now.
    assert scheme(s.port, ("X-Forwarded-Proto", "https")) == "http"
    # Two of the table's headers that disagree: gunicorn's 400.
    assert scheme(s.port, ("X-Scheme", "https"), ("Front-End-Https", "off")) == 400
    assert "contradictory scheme headers" in s.log()


def test_an_empty_table_turns_header_schemes_off(serve, tmp_path):
    conf = tmp_path / "off.conf.py"
    conf.write_text("secure_scheme_headers = {}\n")
    s = serve("routes:app", "-c", str(conf))
    assert scheme(s.port, ("X-Forwarded-Proto", "https")) == "http"
    assert scheme(s.port, ("Forwarded", "proto=https")) == "http"
    # Nothing is read, so nothing can disagree.
    assert scheme(s.port, ("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off")) == "http"


def test_forwarded_proto_beside_x_forwarded_proto(serve):
    s = serve("routes:app")
    assert scheme(s.port, ("Forwarded", "for=203.0.113.9;proto=https")) == "https"
    assert scheme(s.port, ("Forwarded", "for=203.0.113.9;proto=http")) == "http"
    # Both present: they must agree (gunicorn's rule for its own scheme headers).
    assert scheme(s.port, ("X-Forwarded-Proto", "https"), ("Forwarded", "proto=https")) == "https"
    assert scheme(s.port, ("X-Forwarded-Proto", "http"), ("Forwarded", "proto=https")) == 400
    # The proxy's own element, not one the client put on its left.
    assert scheme(s.port, ("Forwarded", "for=6.6.6.6;proto=https, for=203.0.113.9;proto=http")) == "http"
    # Malformed from a trusted peer: ignored and logged; the request is served.
    assert scheme(s.port, ("Forwarded", "for=nonsense;proto=https")) == "http"
    wait_until(lambda: "Forwarded from 127.0.0.1 ignored: a forwarded node that is no address" in s.log())


def test_forwarded_remote_addr_walks_several_hops(serve):
    s = serve("routes:app", "--forwarded-remote-addr", "x-forwarded-for",
              "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8", "--access-logfile", "-")
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    # The client forged the left-most entry; two trusted proxies appended theirs.
    status, env = environ(s.port, [("X-Forwarded-For", "6.6.6.6, 203.0.113.9"),
                                   ("X-Forwarded-For", "10.0.0.7")], conn=c)
    assert (status, env["REMOTE_ADDR"]) == (200, "203.0.113.9")
    own_port = env["REMOTE_PORT"]
    assert own_port == str(c.sock.getsockname()[1]), "without a port in the entry, REMOTE_PORT stays"
    # The next request on the same connection without the header is the connection's again.
    status, env = environ(s.port, [], conn=c)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("127.0.0.1", own_port)
    # Every entry trusted: the left-most; a port in the entry is REMOTE_PORT.
    status, env = environ(s.port, [("X-Forwarded-For", "[2001:db8::1]:4711, 10.0.0.7")], conn=c)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::1", "4711")
    # `unknown` stops the walk: the connection's client.
    assert environ(s.port, [("X-Forwarded-For", "203.0.113.9, unknown")], conn=c)[1]["REMOTE_ADDR"] == "127.0.0.1"
    # The access log's %(h)s is the same client.
    wait_until(lambda: s.out().count("GET /environ") == 4)
    hosts = [line.split()[0] for line in s.out().splitlines() if "GET /environ" in line]
    assert hosts == ["203.0.113.9", "127.0.0.1", "2001:db8::1", "127.0.0.1"]


def test_forwarded_remote_addr_from_forwarded(serve):
    s = serve("routes:app", "--forwarded-remote-addr", "forwarded", "--forwarded-allow-ips", "127.0.0.1")
    addr = remote(s.port, ("Forwarded", 'for=6.6.6.6, for="[2001:db8::5]:4711";proto=https'))
    assert addr == ("2001:db8::5", "4711")
    # Only the named list is read: X-Forwarded-For is the app's to see, not REMOTE_ADDR.
    assert remote(s.port, ("X-Forwarded-For", "203.0.113.9"))[0] == "127.0.0.1"
    assert remote(s.port, ("Forwarded", "for=_hidden"))[0] == "127.0.0.1"


def test_the_client_list_is_ignored_unless_asked_for(serve):
    s = serve("routes:app")
    status, env = environ(s.port, [("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=203.0.113.9")])
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    # The app still sees the headers and can apply its own rule (werkzeug's ProxyFix).
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.9" and env["HTTP_FORWARDED"] == "for=203.0.113.9"


def test_an_untrusted_peer_s_headers_are_ignored_entirely(serve):
    s = serve("routes:app", "--forwarded-remote-addr", "x-forwarded-for", "--forwarded-allow-ips", "127.0.0.1",
              "--access-logfile", "-")
    headers = [("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off"), ("Forwarded", "proto=https;for=_x"),
               ("X-Forwarded-For", "203.0.113.9, bogus")]
    status, env = environ(s.port, headers, source=OTHER)
    # Not a 400 for the contradiction, no scheme, no address, and nothing logged.
    assert (status, env["wsgi.url_scheme"], env["REMOTE_ADDR"]) == (200, "http", OTHER)
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.9, bogus"
    wait_until(lambda: "GET /environ" in s.out())
    assert s.out().startswith(f"{OTHER} ")
    assert "ignored" not in s.log() and "invalid request" not in s.log()
    # The same from the trusted address is believed.
    assert remote(s.port, ("X-Forwarded-For", "203.0.113.9"))[0] == "203.0.113.9"


def test_malformed_lists_from_a_trusted_peer_are_logged_a_few_at_a_time(serve):
    s = serve("routes:app", "--forwarded-remote-addr", "x-forwarded-for")
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    n = 40
    for _ in range(n):
        status, env = environ(s.port, [("X-Forwarded-For", "203.0.113.9, bogus")], conn=c)
        assert (status, env["REMOTE_ADDR"]) == (200, "127.0.0.1")
    line = "X-Forwarded-For from 127.0.0.1 ignored: a forwarded node that is no address"

    def counted():
        log = s.log()
        hidden = re.findall(r"malformed forwarding headers: (\d+) more in the last \d+ s, not logged one by one", log)
        return log.count(line) + sum(map(int, hidden))

    # Every one is logged or counted; at most 10 a second are written.
    wait_until(lambda: counted() == n, timeout=10)
    assert 1 <= s.log().count(line) < n


def test_a_request_whose_body_is_read_first_is_judged_once(serve):
    s = serve("routes:app", "--forwarded-remote-addr", "x-forwarded-for")
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    for xff, want in (("203.0.113.9", "203.0.113.9"), ("203.0.113.9, bogus", "127.0.0.1")):
        c.request("POST", "/environ", body=b"x" * 100_000, headers={"X-Forwarded-For": xff})
        r = c.getresponse()
        assert (r.status, json.loads(r.read())["REMOTE_ADDR"]) == (200, want)
    c.request("POST", "/environ", body=b"x" * 100_000,
              headers={"X-Forwarded-Proto": "https", "Forwarded": "proto=http"})
    assert c.getresponse().status == 400
    wait_until(lambda: "contradictory scheme headers" in s.log())
    assert s.log().count("X-Forwarded-For from 127.0.0.1 ignored") == 1


@pytest.mark.parametrize("args, conf, words", [
    (["--forwarded-remote-addr", "x-real-ip"], None, "argument --forwarded-remote-addr: invalid choice"),
    ([], "forwarded_remote_addr = 'x-real-ip'\n", "setting 'forwarded_remote_addr' must be one of off"),
    ([], "secure_scheme_headers = ['X-SCHEME']\n", "setting 'secure_scheme_headers' must be a dict"),
    ([], "secure_scheme_headers = {'X-SCHEME': 1}\n", "must map header names to the string that means https"),
    ([], "secure_scheme_headers = {'X SCHEME': 'https'}\n", "secure_scheme_headers: \"X SCHEME\" is not a header name"),
    ([], "secure_scheme_headers = {'X-A': 'on', 'x-a': 'on'}\n", "is given twice"),
])
def test_bad_values_are_one_line(tmp_path, args, conf, words):
    if conf is not None:
        (tmp_path / "bad.conf.py").write_text(conf)
        args = [*args, "-c", str(tmp_path / "bad.conf.py")]
    r = subprocess.run([sys.executable, "-m", "ferrule", "routes:app", "--check-config", *args], cwd=APPS,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr


NGINX_SERVERS = """
    server {{
        listen 127.0.0.1:{port};
        location /xff/ {{
            proxy_pass http://127.0.0.1:{upstream}/;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
        }}
        location /fwd/ {{
            proxy_pass http://127.0.0.1:{upstream_fwd}/;
            proxy_set_header Forwarded "$http_forwarded, for=$remote_addr;proto=https";
        }}
    }}
"""


def test_behind_nginx_appending_to_x_forwarded_for(serve, tmp_path):
    xff = serve("routes:app", "--forwarded-remote-addr", "x-forwarded-for", "--access-logfile", "-")
    fwd = serve("routes:app", "--forwarded-remote-addr", "forwarded")
    port = free_port()
    servers = NGINX_SERVERS.format(port=port, upstream=xff.port, upstream_fwd=fwd.port)
    front = Nginx(tmp_path, nginx_conf(tmp_path, servers, connections=64), [port])
    try:
        def through(path, *headers):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(OTHER, 0))
            c.putrequest("GET", path)
            for name, value in headers:
                c.putheader(name, value)
            c.endheaders()
            r = c.getresponse()
            env = json.loads(r.read())
            c.close()
            return env

        # The client's own X-Forwarded-For is kept on the left; nginx appends the peer it saw.
        env = through("/xff/environ", ("X-Forwarded-For", "6.6.6.6"))
        assert env["HTTP_X_FORWARDED_FOR"] == f"6.6.6.6, {OTHER}"
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == (OTHER, "https")
        assert through("/xff/environ")["REMOTE_ADDR"] == OTHER
        wait_until(lambda: xff.out().count("GET /environ") == 2)
        assert [ln.split()[0] for ln in xff.out().splitlines()] == [OTHER, OTHER]
        # The same with Forwarded, on the other ferrule: the client's element stays on the left.
        env = through("/fwd/environ", ("Forwarded", "for=6.6.6.6;proto=http"))
        assert env["HTTP_FORWARDED"] == f"for=6.6.6.6;proto=http, for={OTHER};proto=https"
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == (OTHER, "https")
        # Without one from the client, nginx's value starts with an empty element (skipped).
        env = through("/fwd/environ")
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == (OTHER, "https")
    finally:
        front.stop()
    assert front.error_lines() == []
