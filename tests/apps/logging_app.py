"""A Flask app set up with the usual recipe for running under gunicorn: it reuses the
handlers of the ``gunicorn.error`` logger, so its own log lines reach the server's
error log."""

import logging
import os
import sys

from flask import Flask, request

app = Flask(__name__)
gunicorn_logger = logging.getLogger("gunicorn.error")
app.logger.handlers = gunicorn_logger.handlers
app.logger.setLevel(gunicorn_logger.level)


@app.get("/log")
def log():
    msg = request.args.get("msg", "hello")
    app.logger.debug("debug %s from %s", msg, os.getpid())
    app.logger.info("info %s from %s", msg, os.getpid())
    app.logger.warning("warning %s from %s", msg, os.getpid())
    return "logged"


@app.get("/fail")
def fail():
    try:
        1 / 0
    except ZeroDivisionError:
        app.logger.exception("division failed in %s", os.getpid())
    return "handled"


@app.get("/access")
def access():
    logging.getLogger("gunicorn.access").info("custom access line from %s", os.getpid())
    return "ok"


@app.get("/")
def index():
    return "Hello"


@app.get("/loggers")
def loggers():
    """Each server logger's level, handler types and propagate flag, as installed."""
    out = {}
    for name in ("gunicorn.error", "ferrule.error", "gunicorn.access", "ferrule.access"):
        logger = logging.getLogger(name)
        out[name] = [logging.getLevelName(logger.level), [type(h).__name__ for h in logger.handlers],
                     logger.propagate]
    return out


@app.get("/print")
def printing():
    """An app that prints, as many do: to stdout, and a warning to stderr."""
    print("printed by", os.getpid())
    print("to stderr from", os.getpid(), file=sys.stderr)
    return "printed"


@app.get("/undecodable")
def undecodable():
    """A file name that is not UTF-8, as os.listdir() returns it (a lone surrogate),
    logged three ways."""
    name = os.fsdecode(b"report-\xff.csv")
    app.logger.warning("cannot read %s", name)
    logging.getLogger("gunicorn.access").info("access %s", name)
    request.environ["wsgi.errors"].write(f"wsgi.errors {name}\n")
    return "logged"
