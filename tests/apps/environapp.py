"""A WSGI app that answers with the environ entries a front end can influence, as JSON.

Used to compare Polycorn with Gunicorn on the same requests (tests/server/test_forwarded.py).
"""

import json

KEYS = ("REMOTE_ADDR", "wsgi.url_scheme", "SCRIPT_NAME", "PATH_INFO", "HTTP_PATH_INFO",
        "HTTP_SCRIPT_NAME", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
        "HTTP_REMOTE_USER", "REMOTE_USER", "HTTP_X_CUSTOM", "HTTP_CONTENT_LENGTH")


def application(environ, start_response):
    body = json.dumps({key: environ.get(key) for key in KEYS}, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
