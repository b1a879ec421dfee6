"""A Flask app for the front-server tests (`tests/e2e/test_uwsgi_nginx.py`): the URLs it
builds under its mount, the environ it got, uploads, and a response streamed on cue."""

from flask import Flask, Response, jsonify, request, send_file, url_for

from front_parts import DOWNLOAD, blocks, cue, environ_strings, hash_stream

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(url=url_for("item", item_id=7), external=url_for("item", item_id=7, _external=True),
                   path_info=request.path, script_root=request.script_root)


@app.get("/items/<int:item_id>")
def item(item_id):
    return jsonify(id=item_id, path_info=request.path, script_root=request.script_root)


@app.route("/env/", defaults={"rest": ""}, methods=["GET", "POST"])
@app.route("/env/<path:rest>", methods=["GET", "POST"])
def env(rest):
    return jsonify(environ_strings(request.environ))


@app.post("/upload")
def upload():
    return jsonify(hash_stream(request.stream.read))


@app.get("/stream/<key>")
def stream(key):
    return Response(blocks(key), mimetype="text/plain")


@app.post("/release/<key>")
def release(key):
    cue(key).set()
    return "released"


@app.get("/download")
def download():
    return send_file(DOWNLOAD, mimetype="application/octet-stream")  # through wsgi.file_wrapper


@app.get("/boom")
def boom():
    raise RuntimeError("flask secret")
