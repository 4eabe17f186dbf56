"""The WSGI app the event worker's tests run: it reports what it was asked, or misbehaves on purpose.

Routes under /_/ (any other target echoes the request as JSON, for the corpus):
/_/pid (worker pid), /_/big?mb=N (N MiB streamed in 64 KiB chunks, counted in a
file named by BIG_COUNTER), /_/chunked (a generator body, no Content-Length),
/_/sleep?s=N (blocks the loop N seconds), /_/file (wsgi.file_wrapper of a
file of FILE_SIZE bytes), /_/write (PEP 3333 write()), /_/fail (raises),
/_/fail-midway (raises after the first chunk).
"""

import json
import os
import time
from urllib.parse import parse_qs

CHUNK = b"x" * 65536
FILE_SIZE = 300_000
# The /_/file payload lives in the test's own directory (EVENT_APP_DIR, set by
# EventServer), which pytest removes: never in the shared temp dir, where one file
# per worker pid piled up.
FILE_NAME = "event-file.bin"


def _query(environ, name, default):
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def _reply(start_response, body, ctype="application/json", status="200 OK"):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    report = {"method": environ["REQUEST_METHOD"], "uri": environ["RAW_URI"],
              "protocol": environ["SERVER_PROTOCOL"], "body": body.decode("latin-1"),
              "content_length": environ.get("CONTENT_LENGTH"), "headers": headers}
    return _reply(start_response, json.dumps(report).encode())


def big(environ, start_response):
    megabytes = int(_query(environ, "mb", "1"))
    counter = environ.get("HTTP_X_COUNTER_FILE")
    start_response("200 OK", [("Content-Length", str(megabytes * 16 * len(CHUNK)))])

    def chunks():
        for produced in range(megabytes * 16):
            if counter:
                with open(counter, "w") as f:
                    f.write(str(produced + 1))
            yield CHUNK
    return chunks()


def chunked(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (b"part%d;" % i for i in range(5))


def file_response(environ, start_response):
    path = os.path.join(os.environ["EVENT_APP_DIR"], FILE_NAME)
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"  # workers may race to write it
        with open(tmp, "wb") as f:
            f.write(bytes(range(256)) * (FILE_SIZE // 256) + b"z" * (FILE_SIZE % 256))
        os.replace(tmp, path)
    f = open(path, "rb")  # noqa: SIM115 - closed by the server through the wrapper
    start_response("200 OK", [("Content-Length", str(FILE_SIZE))])
    return environ["wsgi.file_wrapper"](f, 32768)


def write_api(environ, start_response):
    write = start_response("200 OK", [("Content-Length", "10")])
    write(b"hello")
    return [b"world"]


def fail(environ, start_response):
    raise RuntimeError("this app fails on purpose")


def fail_midway(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def chunks():
        yield b"first;"
        raise RuntimeError("this body fails on purpose")
    return chunks()


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/_/pid":
        return _reply(start_response, str(os.getpid()).encode(), "text/plain")
    if path == "/_/big":
        return big(environ, start_response)
    if path == "/_/chunked":
        return chunked(environ, start_response)
    if path == "/_/sleep":
        seconds = float(_query(environ, "s", "1"))
        time.sleep(seconds)
        return _reply(start_response, b"slept", "text/plain")
    if path == "/_/file":
        return file_response(environ, start_response)
    if path == "/_/write":
        return write_api(environ, start_response)
    if path == "/_/fail":
        return fail(environ, start_response)
    if path == "/_/fail-midway":
        return fail_midway(environ, start_response)
    return echo(environ, start_response)
