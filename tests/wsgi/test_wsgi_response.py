"""start_response, write(), exc_info, FileWrapper and run_app, without sockets."""

from __future__ import annotations

import io
import sys

import pytest
from polycorn.server.wsgi.response import FileWrapper, StartResponse
from polycorn.server.wsgi.run import run_app


def test_start_response_records_status_and_wire_headers():
    start = StartResponse()
    write = start("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", " 3 ")])
    assert write == start.write
    assert (start.status, start.status_code, start.reason) == ("404 Not Found", 404, b"Not Found")
    assert start.wire_headers == [(b"Content-Type", b"text/plain"), (b"Content-Length", b"3")]
    assert start.content_length == 3
    assert not start.headers_sent


def test_status_without_reason_and_latin1_headers():
    start = StartResponse()
    start("204", [("X-Name", "Jos\u00e9")])
    assert (start.status_code, start.reason) == (204, b"")
    assert start.wire_headers == [(b"X-Name", b"Jos\xe9")]


@pytest.mark.parametrize("status", ["200OK", "2000 OK", "OK 200", "200 O\nK", "100 Continue",
                                    "099 Low", ""])
def test_invalid_status_rejected(status):
    start = StartResponse()
    with pytest.raises(ValueError):
        start(status, [])


def test_status_must_be_str():
    with pytest.raises(TypeError):
        StartResponse()(b"200 OK", [])


@pytest.mark.parametrize("headers, error", [
    ([("X-A", "b\r\nSet-Cookie: evil=1")], ValueError),  # response splitting
    ([("X A", "v")], ValueError),
    ([("X-A", b"v")], TypeError),
    ([(b"X-A", "v")], TypeError),
    ([("X-A",)], TypeError),
    ("X-A: v", TypeError),
    ([("X-A", "caf\u00e9\u2603")], ValueError),  # not latin-1
    ([("Content-Length", "12a")], ValueError),
    ([("Content-Length", "\u00b2")], ValueError),  # a digit to Python, not to HTTP
])
def test_invalid_headers_rejected(headers, error):
    with pytest.raises(error):
        StartResponse()("200 OK", headers)


def test_hop_by_hop_headers_dropped():
    start = StartResponse()
    start("200 OK", [("Connection", "close"), ("Transfer-Encoding", "chunked"), ("X-Ok", "1"),
                     ("Keep-Alive", "timeout=5"), ("Upgrade", "h2c"), ("TE", "trailers")])
    # Connection and Transfer-Encoding are left for ServerConnection, which frames the
    # body itself and honours "Connection: close".
    assert [name for name, _ in start.headers] == ["Connection", "Transfer-Encoding", "X-Ok"]


def test_second_call_without_exc_info_is_an_error():
    start = StartResponse()
    start("200 OK", [])
    with pytest.raises(AssertionError):
        start("500 Internal Server Error", [])


def test_exc_info_before_headers_sent_replaces_status():
    start = StartResponse()
    start("200 OK", [("X-A", "1")])
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        start("500 Internal Server Error", [("X-B", "2")], sys.exc_info())
    assert start.status_code == 500 and start.headers == [("X-B", "2")]


def test_exc_info_after_headers_sent_reraises():
    sent = []
    start = StartResponse(sent.append)
    start("200 OK", [])
    start.write(b"partial")
    assert sent == [b"partial"] and start.headers_sent
    with pytest.raises(RuntimeError, match="late"):
        try:
            raise RuntimeError("late")
        except RuntimeError:
            start("500 Internal Server Error", [], sys.exc_info())
    assert start.status_code == 200


def test_write_rules():
    start = StartResponse()
    with pytest.raises(AssertionError):
        start.write(b"x")
    start("200 OK", [])
    with pytest.raises(TypeError):
        start.write("text")
    start.write(b"")
    assert not start.headers_sent  # an empty write does not freeze the status
    start.write(b"a")
    assert start.headers_sent and start.written == [b"a"]


def test_file_wrapper_iterates_blocks_and_closes():
    f = io.BytesIO(b"abcdefg")
    wrapper = FileWrapper(f, 3)
    assert list(wrapper) == [b"abc", b"def", b"g"]
    wrapper.close()
    assert f.closed
    FileWrapper(iter([])).close()  # no close() on the object: nothing to call


class ClosingIterable:
    def __init__(self, chunks, fail_at=None):
        self.chunks = chunks
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("iteration failed")
            yield chunk

    def close(self):
        self.closed += 1


def test_run_app_with_list_body():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"", b"h", b"i"]

    resp = run_app(app, {})
    assert resp.start.status == "200 OK" and resp.in_memory and resp.file is None
    assert resp.first == b"h" and list(resp.rest) == [b"i"]
    resp.close()


def test_run_app_lazy_start_response_in_generator():
    def app(environ, start_response):
        yield b""
        start_response("201 Created", [])
        yield b"made"
        yield b"!"

    resp = run_app(app, {})
    assert resp.start.status_code == 201 and resp.first == b"made"
    assert list(resp.rest) == [b"!"] and not resp.in_memory


def test_run_app_generator_error_then_exc_info_before_first_chunk():
    def app(environ, start_response):
        start_response("200 OK", [])
        try:
            raise ValueError("db down")
        except ValueError:
            start_response("503 Service Unavailable", [], sys.exc_info())
        yield b"sorry"

    resp = run_app(app, {})
    assert resp.start.status_code == 503 and resp.first == b"sorry"


def test_run_app_buffers_write_output_without_a_sink():
    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"one ")
        write(b"two ")
        return [b"three"]

    resp = run_app(app, {})
    assert resp.first == b"one two three"


def test_run_app_empty_body():
    iterable = ClosingIterable([])

    def app(environ, start_response):
        start_response("204 No Content", [])
        return iterable

    resp = run_app(app, {})
    assert resp.first == b"" and list(resp.rest) == []
    resp.close()
    resp.close()
    assert iterable.closed == 1


def test_run_app_closes_iterable_when_it_fails_early():
    iterable = ClosingIterable([b"", b"x"], fail_at=1)

    def app(environ, start_response):
        start_response("200 OK", [])
        return iterable

    with pytest.raises(RuntimeError, match="iteration failed"):
        run_app(app, {})
    assert iterable.closed == 1


def test_run_app_requires_start_response_and_bytes():
    iterable = ClosingIterable([b"x"])
    with pytest.raises(AssertionError):
        run_app(lambda e, s: iterable, {})
    assert iterable.closed == 1

    def text_app(environ, start_response):
        start_response("200 OK", [])
        return ["text"]

    with pytest.raises(TypeError):
        run_app(text_app, {})


def test_run_app_file_wrapper_is_not_read_ahead():
    f = io.BytesIO(b"file body")

    def app(environ, start_response):
        start_response("200 OK", [])
        return FileWrapper(f)

    resp = run_app(app, {})
    assert resp.file is not None and f.tell() == 0 and resp.first == b""
    assert b"".join(resp.rest) == b"file body"
    resp.close()
    assert f.closed
