"""The access log's ``%({VAR}e)s`` (issue 21, point 7) is the request's WSGI environ,
as gunicorn's: never the server's process environment, and keys the app or a
middleware stored count (read once the response was sent)."""

import http.client

from conftest import booted, wait_until

FORMAT = ("%({SECRET}e)s|%({HTTP_X_FOO}e)s|%({REMOTE_USER}e)s|%({my.key}e)s|%({my.num}e)s|"
          "%({my.quote}e)s|%({http_x_foo}e)s|%({wsgi.url_scheme}e)s|%({PATH_INFO}e)s|%(s)s")


def lines(path, n):
    text = path.read_text()
    return len(text.splitlines()) >= n and text.splitlines()


def request(port, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def test_environ_atoms_read_the_request_environ_not_the_process_environment(serve, tmp_path):
    access = tmp_path / "access.log"
    s = serve("environ_log_app:app", "--access-logfile", str(access), "--access-logformat", FORMAT,
              env={"SECRET": "hunter2", "REMOTE_USER": "root", "HTTP_X_FOO": "from-the-env"})
    booted(s, 1)  # its request is the first line
    wait_until(lambda: lines(access, 1))
    assert request(s.port, "/set", {"X-Foo": "bar"}) == 200
    assert request(s.port, "/plain") == 200
    assert request(s.port, "/raise", {"X-Foo": "x"}) == 500
    got = wait_until(lambda: lines(access, 4))[1:]
    assert got[0] == r'-|bar|alice|v|42|say \"hi\"|bar|http|/set|200'
    assert got[1] == "-|-|-|-|-|-|-|http|/plain|200"
    assert got[2] == "-|x|-|before the error|-|-|x|http|/raise|500"
    text = access.read_text()
    assert "hunter2" not in text and "root" not in text and "from-the-env" not in text
    assert s.stop() == 0


def test_a_key_flask_stores_is_logged_as_str_of_its_value(serve, tmp_path):
    access = tmp_path / "access.log"
    s = serve("flask_app:app", "--access-logfile", str(access),
              "--access-logformat", "%(s)s %({werkzeug.request}e)s")
    booted(s, 1)  # GET /
    got = wait_until(lambda: lines(access, 1))
    # Flask stores its request there, and sets it to None when its request context ends
    # (before it returns the response): gunicorn logs "None" too (`%s` of the value).
    assert got[0] == "200 None", got
    assert s.stop() == 0
