"""A WSGI app for the request-cycle policy's wire tests (tests/server/test_policy_wire.py).

The first path segment names the outcome; the rest makes the request unique. Every
iterable with a close() appends "close PATH" to $CYCLE_NOTES, where post_request
and the access log also write (cycle_conf.py), so a test reads their order there.
"""

import os
import time

NOTES = os.environ.get("CYCLE_NOTES", os.devnull)
SHORT_FILE = os.environ.get("CYCLE_SHORT_FILE", os.devnull)


def note(line):
    with open(NOTES, "a") as f:
        f.write(line + "\n")


class Body:
    """An iterable body that notes its close(), and may fail on the way."""

    def __init__(self, path, chunks, *, fail_after=None, close_raises=False, pause=0.0):
        self.path = path
        self.chunks = chunks
        self.fail_after = fail_after
        self.close_raises = close_raises
        self.pause = pause

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("midway failure")
            if self.pause:
                time.sleep(self.pause)
            yield chunk

    def close(self):
        note(f"close {self.path}")
        if self.close_raises:
            raise RuntimeError("close failure")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    kind = path.split("/")[1]
    if kind == "error":
        raise RuntimeError("app failure before start_response")
    if kind == "ok":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return Body(path, [b"hello"])
    if kind == "midway":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body(path, [b"part one\n", b"part two\n"], fail_after=1)
    if kind == "stream":  # long enough that a client leaving is noticed mid-body
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Body(path, (b"x" * 65536 for _ in range(4000)), pause=0.001)
    if kind == "close-raises":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return Body(path, [b"hello"], close_raises=True)
    if kind == "bad-header":  # a CR in a value: refused when the head is framed
        start_response("200 OK", [("X-Split", "a\r\nX-Injected: b"), ("Content-Length", "5")])
        return Body(path, [b"hello"])
    if kind == "short-file":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", "100000")])
        return environ["wsgi.file_wrapper"](open(SHORT_FILE, "rb"))
    start_response("404 Not Found", [("Content-Length", "0")])
    return []
