"""A WSGI app for wire-level tests: it records every request it sees, one line per request.

Every request appends "METHOD TARGET" to the file named by $WIRE_LOG before
answering, so a test can prove that a hidden (smuggled) request never reached
the app. /stream answers without Content-Length (framed by the server); /echo
reads the whole body and returns it; /names returns the environ entries that name
the server and the request: SERVER_NAME|SERVER_PORT|PATH_INFO|SERVER_PROTOCOL|CONTENT_TYPE.
"""

import os

LOG = os.environ.get("WIRE_LOG", os.devnull)


def application(environ, start_response):
    with open(LOG, "a") as f:
        f.write(f"{environ['REQUEST_METHOD']} {environ['RAW_URI']}\n")
    path = environ["PATH_INFO"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"part {i}\n".encode() for i in range(3))
    if path == "/names":
        keys = ("SERVER_NAME", "SERVER_PORT", "PATH_INFO", "SERVER_PROTOCOL", "CONTENT_TYPE")
        body = "|".join(environ.get(key, "-") for key in keys).encode("latin-1")
    else:
        body = environ["wsgi.input"].read() if path == "/echo" else b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
