"""A real framework through ClientConnection: Flask forms, JSON, streaming and send_file."""

from __future__ import annotations

import json

import pytest
from wsgi_support import HTTPReader, LoopbackServer

flask = pytest.importorskip("flask")


@pytest.fixture
def flask_server(tmp_path):
    app = flask.Flask("wsgi-test")
    blob = tmp_path / "static.bin"
    blob.write_bytes(bytes(range(256)) * 400)

    @app.post("/form")
    def form():
        return {"name": flask.request.form["name"], "path": flask.request.path,
                "remote": flask.request.remote_addr, "url": flask.request.url}

    @app.post("/json")
    def echo_json():
        return {"got": flask.request.get_json()}

    @app.get("/stream")
    def stream():
        return flask.Response((f"line {i}\n" for i in range(3)), mimetype="text/plain")

    @app.get("/file")
    def file():
        return flask.send_file(blob, mimetype="application/octet-stream")

    server = LoopbackServer(app)
    server.blob = blob.read_bytes()
    yield server
    server.close()


def test_form_and_url(flask_server):
    body = b"name=caf%C3%A9+au+lait"
    with flask_server.connect() as sock:
        sock.sendall(b"POST /form?x=1 HTTP/1.1\r\nHost: example.test:8080\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        resp = HTTPReader(sock).read_response()
    assert resp.status == 200
    assert json.loads(resp.body) == {"name": "café au lait", "path": "/form",
                                     "remote": "127.0.0.1",
                                     "url": "http://example.test:8080/form?x=1"}


def test_chunked_json_request_and_streamed_response(flask_server):
    payload = json.dumps({"k": [1, 2, 3]}).encode()
    with flask_server.connect() as sock:
        reader = HTTPReader(sock)
        sock.sendall(b"POST /json HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
                     % (len(payload), payload))
        assert json.loads(reader.read_response().body) == {"got": {"k": [1, 2, 3]}}
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        resp = reader.read_response()
        assert resp.headers["transfer-encoding"] == "chunked"
        assert resp.body == b"line 0\nline 1\nline 2\n"


def test_send_file(flask_server):
    with flask_server.connect() as sock:
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: t\r\n\r\n")
        resp = HTTPReader(sock).read_response()
    assert resp.complete and resp.body == flask_server.blob
    assert resp.headers["content-length"] == str(len(flask_server.blob))
