"""A small Flask app for the docs and the tests: plain, echo, JSON, streaming and health.

Run: polycorn flask_app:app (or the factory form, flask_app:create_app()).
"""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify, request, stream_with_context


def create_app(name: str = "polycorn-example") -> Flask:
    app = Flask(name)

    @app.get("/")
    def index() -> Response:
        return Response("Hello from Flask\n", mimetype="text/plain")

    @app.post("/echo")
    def echo() -> Response:
        # The body back as sent: exercises Content-Length and chunked request bodies.
        return Response(request.get_data(), mimetype=request.mimetype or "application/octet-stream")

    @app.get("/json")
    def as_json() -> Response:
        return jsonify(app=name, pid=os.getpid(), version=os.environ.get("APP_VERSION", "1"),
                       args=request.args.to_dict())

    @app.get("/stream")
    def stream() -> Response:
        # No Content-Length: the server must frame it (chunked on HTTP/1.1).
        count = request.args.get("n", default=5, type=int)

        def chunks():
            for i in range(count):
                yield f"chunk {i}\n"

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    @app.get("/health")
    def health() -> Response:
        return Response("ok\n", mimetype="text/plain")

    return app


app = create_app()
