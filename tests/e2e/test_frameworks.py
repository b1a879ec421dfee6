"""Real Flask and Django apps behind ferrule."""

import http.client
import json

import pytest

pytest.importorskip("flask")
pytest.importorskip("django")


def request(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict(r.getheaders()), data


def test_flask(serve):
    s = serve("flask_app:app")
    assert request(s.port, "GET", "/")[2] == b"Hello from Flask"
    status, _, body = request(s.port, "POST", "/json", json.dumps({"a": [1, 2]}), {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body) == {"received": {"a": [1, 2]}, "path": "/json"}
    boundary = "xyzzy"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nferrule\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n{'z' * 100000}\r\n--{boundary}--\r\n")
    status, _, body = request(s.port, "POST", "/form", form.encode(),
                              {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert json.loads(body) == {"name": "ferrule", "size": 100000}
    status, headers, body = request(s.port, "GET", "/stream")
    assert body == b"".join(f"line {i}\n".encode() for i in range(5))
    status, _, body = request(s.port, "GET", "/boom")
    assert status == 500 and b"flask secret" not in body
    assert request(s.port, "GET", "/missing")[0] == 404
    s.stop()
    assert "RuntimeError: flask secret" in s.log()


def test_django(serve):
    s = serve("django_app:application")
    assert request(s.port, "GET", "/")[2] == b"Hello from Django"
    status, _, body = request(s.port, "POST", "/echo?q=search", b"payload", {"Host": "example.com:8080"})
    assert json.loads(body) == {"method": "POST", "body": "payload", "host": "example.com:8080",
                                "query": "search", "secure": False}
    status, _, body = request(s.port, "POST", "/echo", b"x", {"X-Forwarded-Proto": "https"})
    # ferrule trusts X-Forwarded-Proto from 127.0.0.1 (gunicorn's default), so Django sees https.
    assert json.loads(body)["secure"] is True
    assert json.loads(request(s.port, "GET", "/items/42")[2]) == {"id": 42, "path": "/items/42"}
    assert request(s.port, "GET", "/stream")[2] == b"part 0;part 1;part 2;"
    status, _, body = request(s.port, "GET", "/boom")
    assert status == 500 and b"django secret" not in body


def test_forwarded_proto_from_a_trusted_proxy_sets_url_scheme(serve):
    s = serve("routes:app")
    status, _, body = request(s.port, "GET", "/environ", headers={"X-Forwarded-Proto": "https"})
    assert json.loads(body)["wsgi.url_scheme"] == "https"
    s2 = serve("routes:app", "--forwarded-allow-ips", "10.0.0.1")
    status, _, body = request(s2.port, "GET", "/environ", headers={"X-Forwarded-Proto": "https"})
    assert json.loads(body)["wsgi.url_scheme"] == "http"
