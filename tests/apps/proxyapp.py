"""A WSGI app for the PROXY protocol tests: it answers with the client's address entries as
JSON and appends "METHOD PATH" to $PROXY_APP_LOG, so a test can prove a refused
connection never reached it."""

import json
import os

LOG = os.environ.get("PROXY_APP_LOG", os.devnull)
KEYS = ("REMOTE_ADDR", "REMOTE_PORT", "PROXY_PROTOCOL", "PROXY_ADDR", "PROXY_PORT",
        "wsgi.url_scheme", "HTTP_X_FORWARDED_PROTO")


def application(environ, start_response):
    with open(LOG, "a") as f:
        f.write(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}\n")
    body = json.dumps({key: environ.get(key) for key in KEYS}, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
