"""The benchmark's apps, the same for every server: hello, a 64 KiB body, a 4 KiB POST echo.

WSGI callables for Polycorn, Gunicorn, granian and bjoern; ASGI twins for uvicorn
(an ASGI server cannot run WSGI without a slower adapter). Each app sets
Content-Length, so no server is measured on its chunked encoding.
"""

HELLO = b"Hello, World!\n"
BIG = bytes(range(256)) * 256  # 64 KiB
_HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]
_BIG_HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BIG)))]


def hello(environ, start_response):
    start_response("200 OK", list(_HELLO_HEADERS))
    return [HELLO]


def big(environ, start_response):
    start_response("200 OK", list(_BIG_HEADERS))
    return [BIG]


def echo(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def _asgi_reply(send, body: bytes, ctype: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def asgi_hello(scope, receive, send):
    await _asgi_reply(send, HELLO, b"text/plain")


async def asgi_big(scope, receive, send):
    await _asgi_reply(send, BIG, b"application/octet-stream")


async def asgi_echo(scope, receive, send):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await _asgi_reply(send, body, b"application/octet-stream")


APPS = ("hello", "big", "echo")
