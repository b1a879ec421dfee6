"""An app that stores keys in its environ, for the access log's ``%({VAR}e)s`` atoms."""


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/set":
        environ["REMOTE_USER"] = "alice"  # as an auth middleware does
        environ["my.num"] = 42
        environ["my.quote"] = 'say "hi"'

        def body():
            yield b"one "
            environ["my.key"] = "v"  # stored while the response is being sent
            yield b"two"

        start_response("200 OK", [("Content-Type", "text/plain")])
        return body()
    if path == "/raise":
        environ["my.key"] = "before the error"
        raise RuntimeError("app failed")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain"]
