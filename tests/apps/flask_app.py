"""A small real Flask app."""

import time

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask"


@app.post("/json")
def echo_json():
    return jsonify(received=request.get_json(), path=request.path)


@app.post("/form")
def form():
    f = request.files.get("upload")
    return jsonify(name=request.form.get("name"), size=len(f.read()) if f else None)


@app.get("/stream")
def stream():
    return Response((f"line {i}\n" for i in range(5)), mimetype="text/plain")


@app.get("/sleep")
def sleep():
    time.sleep(0.2)
    return "slept"


@app.get("/boom")
def boom():
    raise RuntimeError("flask secret")
