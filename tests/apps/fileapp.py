"""A WSGI app that answers every request with the file $FILE_APP_PATH through
wsgi.file_wrapper (the sendfile path of a plain socket; over TLS the bytes must go
through the TLS layer instead)."""

import os


def application(environ, start_response):
    path = os.environ["FILE_APP_PATH"]
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(os.path.getsize(path)))])
    return environ["wsgi.file_wrapper"](open(path, "rb"))  # noqa: SIM115 - the server closes it
