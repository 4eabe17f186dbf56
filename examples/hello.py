"""The smallest WSGI app: used by the docs, the tests and the benchmark."""

import os

VERSION = os.environ.get("APP_VERSION", "1")
BODY = b"Hello, World!\n"


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
