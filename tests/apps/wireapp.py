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


async def asgi_application(scope, receive, send):
    """The same app for -k asgi: /names answers from the scope what the environ says above."""
    if scope["type"] != "http":
        raise RuntimeError(f"no {scope['type']} here")  # lifespan auto: not supported
    raw = scope["raw_path"] + (b"?" + scope["query_string"] if scope["query_string"] else b"")
    with open(LOG, "a") as f:
        f.write(f"{scope['method']} {raw.decode('latin-1')}\n")
    path = scope["path"]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"Content-Type", b"text/plain")]})
        for i in range(3):
            await send({"type": "http.response.body", "body": f"part {i}\n".encode(),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/names":
        host, port = scope["server"]
        headers = dict(scope["headers"])
        values = (host, "" if port is None else str(port), path, "HTTP/" + scope["http_version"],
                  headers.get(b"content-type", b"-").decode("latin-1"))
        body = "|".join(values).encode("latin-1")
    elif path == "/echo":
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the body never came whole: answer nothing (the server refuses it)
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
    else:
        body = b"ok"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"Content-Type", b"text/plain"),
                            (b"Content-Length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
