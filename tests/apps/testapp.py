"""A WSGI app for the server's process tests: who answered, slow requests, versions, health.

Routes: /pid (the worker's pid), /sleep?s=N (answers after N seconds), /version
(APP_VERSION from the environment or the VERSION file beside this module),
/health (status from HEALTH_STATUS, default 200), /echo (the request body back),
/bytes?n=N (N bytes, for slow readers),
/gc-frozen (how many objects the worker's garbage collector never scans).
FAIL_IMPORT=1 in the environment makes the import fail, as a broken release would.
"""

import gc
import os
import time
from pathlib import Path
from urllib.parse import parse_qs

if os.environ.get("FAIL_IMPORT") == "1":
    raise ImportError("this release is broken on purpose (FAIL_IMPORT=1)")

_version_file = Path(__file__).with_name("VERSION")
VERSION = os.environ.get("APP_VERSION") or (
    _version_file.read_text().strip() if _version_file.exists() else "1")
HEALTH = int(os.environ.get("HEALTH_STATUS", "200"))


def _reply(start_response, status, body, ctype="text/plain"):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/pid":
        return _reply(start_response, "200 OK", str(os.getpid()).encode())
    if path == "/sleep":
        seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["1"])[0])
        time.sleep(seconds)
        return _reply(start_response, "200 OK", b"slept %.2f" % seconds)
    if path == "/version":
        return _reply(start_response, "200 OK", VERSION.encode())
    if path == "/health":
        status = f"{HEALTH} {'OK' if HEALTH < 400 else 'Unhealthy'}"
        return _reply(start_response, status, b"health\n")
    if path == "/gc-frozen":
        return _reply(start_response, "200 OK", str(gc.get_freeze_count()).encode())
    if path == "/bytes":
        size = int(parse_qs(environ.get("QUERY_STRING", "")).get("n", ["0"])[0])
        return _reply(start_response, "200 OK", b"x" * size)
    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        return _reply(start_response, "200 OK", environ["wsgi.input"].read(length))
    return _reply(start_response, "200 OK", b"hello\n")
