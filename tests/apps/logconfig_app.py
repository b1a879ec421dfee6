"""An app for the Python logging config tests: logs on gunicorn's and ferrule's
logger names, and answers with a response header and an environ key it sets."""

import logging


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/log":
        logging.getLogger("gunicorn.error").warning("app warning %s", environ.get("QUERY_STRING"))
    elif path == "/alias":
        logging.getLogger("ferrule.error").error("alias error %s", environ.get("QUERY_STRING"))
    environ["app.note"] = 'said "hi"'
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-App", "yes"),
                              ("Content-Length", str(len(body)))])
    return [body]
