"""ClientConnection and WSGIHandler over real loopback sockets (a server thread, no mocks)."""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
import time
import warnings
from wsgiref.validate import validator

import pytest
from polycorn.server.wsgi.handler import ClientConnection, WSGIHandler
from wsgi_support import HTTPReader, LoopbackServer, RecordingAccessLog, make_cfg

HELLO = b"Hello, World!\n"


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))])
    return [HELLO]


def echo(environ, start_response):
    """The path, then the body back (read with read())."""
    body = environ["wsgi.input"].read()
    out = environ["PATH_INFO"].encode() + b":" + body
    start_response("200 OK", [("Content-Length", str(len(out)))])
    return [out]


@pytest.fixture(params=["plain", "sliced"])
def serve(request):
    """Each test twice: with the socket's own timeout (thread worker, before) and with
    the sync worker's sliced waits (client_waits.py)."""
    servers: list[LoopbackServer] = []

    def start(app, **kw) -> LoopbackServer:
        server = LoopbackServer(app, sliced=request.param == "sliced", **kw)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def get(path: str = "/", extra: str = "", method: str = "GET", body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def test_keep_alive_serves_several_requests_on_one_connection(serve):
    server = serve(hello)
    with server.connect() as sock:
        reader = HTTPReader(sock)
        for _ in range(3):
            sock.sendall(get())
            resp = reader.read_response()
            assert (resp.status, resp.body) == (200, HELLO)
            assert "close" not in resp.headers.get("connection", "")
            assert "date" in resp.headers and resp.headers["server"] == "polycorn"
    server.close()
    assert len(server.connections) == 1
    assert server.served_cycles[:3] == [True, True, True]
    assert [r[1] for r in server.access_log.records] == ["200 OK"] * 3
    environ, status, headers, length, seconds = server.access_log.records[0]
    assert environ["PATH_INFO"] == "/" and length == len(HELLO) and 0 <= seconds < 5
    assert ("Content-Type", "text/plain") in headers


@pytest.mark.parametrize("keep_alive", [False, True], ids=["sync", "keep-alive"])
def test_a_closed_connection_is_freed_without_the_cyclic_collector(keep_alive):
    """No reference cycle outlives a connection: the sync worker serves one per request,
    and leaving each to the cyclic collector cost 16 objects a request and made full
    collections (which unshare the master's pages) frequent."""
    import gc
    import weakref

    handler = WSGIHandler(hello, make_cfg(), "worker-1", RecordingAccessLog())
    ours, theirs = socket.socketpair()
    with theirs:
        conn = ClientConnection(handler, ours, ("127.0.0.1", 1), ("127.0.0.1", 8000),
                                keep_alive=keep_alive)
        theirs.sendall(get() + get(extra="Connection: close\r\n"))
        gc.disable()
        try:
            while conn.serve_one():
                pass
            conn.close()
            handler.access_log.records.clear()  # they hold each request's environ
            freed = weakref.ref(conn)
            del conn
            assert freed() is None
        finally:
            gc.enable()


def test_sync_mode_closes_after_one_response(serve):
    server = serve(hello, keep_alive=False)
    with server.connect() as sock:
        sock.sendall(get())
        reader = HTTPReader(sock)
        resp = reader.read_response()
        assert resp.body == HELLO and resp.headers["connection"] == "close"
        assert reader.at_eof()


def test_pipelined_requests_answered_in_order(serve):
    server = serve(echo)
    with server.connect() as sock:
        sock.sendall(get("/a") + get("/b", method="POST", body=b"xyz") + get("/c"))
        reader = HTTPReader(sock)
        assert [reader.read_response().body for _ in range(3)] == [b"/a:", b"/b:xyz", b"/c:"]


def test_has_buffered_data_reports_a_pipelined_request():
    handler = WSGIHandler(echo, make_cfg(), None, RecordingAccessLog(enabled=False))
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(5)
        conn = ClientConnection(handler, ours, "", "/tmp/test.sock", keep_alive=True)
        theirs.sendall(get("/one") + get("/two"))
        assert conn.serve_one() is True
        assert conn.has_buffered_data is True
        assert conn.serve_one() is True
        assert conn.has_buffered_data is False
        reader = HTTPReader(theirs)
        assert reader.read_response().body == b"/one:"
        assert reader.read_response().body == b"/two:"
        conn.close()


def test_head_keeps_length_sends_no_body(serve):
    server = serve(hello)
    with server.connect() as sock:
        reader = HTTPReader(sock)
        sock.sendall(get(method="HEAD") + get())
        resp = reader.read_response("HEAD")
        assert resp.headers["content-length"] == str(len(HELLO)) and resp.body == b""
        assert reader.read_response().body == HELLO  # nothing stray between the two


def test_generator_body_is_chunked_and_streamed(serve):
    client_has_first = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first "
        # The first chunk must reach the client before the app produces the next.
        assert client_has_first.wait(5)
        yield b""
        yield b"second"

    server = serve(app)
    with server.connect() as sock:
        sock.sendall(get())
        reader = HTTPReader(sock)
        code, _, headers = reader.read_head()
        assert headers["transfer-encoding"] == "chunked"
        assert reader._line() == b"6" and reader._exactly(8) == b"first \r\n"
        client_has_first.set()
        assert [reader._line() for _ in range(4)] == [b"6", b"second", b"0", b""]
        sock.sendall(get())  # and the connection is still good
        assert reader.read_response().body == b"first second"


def test_http10_client_gets_close_delimited_body(serve):
    def app(environ, start_response):
        start_response("200 OK", [])
        return iter([b"a", b"b"])

    server = serve(app)
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reader = HTTPReader(sock)
        resp = reader.read_response()
        assert resp.body == b"ab" and resp.headers["connection"] == "close"


def test_write_callable(serve):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "6")])
        write(b"abc")
        write(b"def")
        return []

    server = serve(app)
    with server.connect() as sock:
        sock.sendall(get() + get())
        reader = HTTPReader(sock)
        assert reader.read_response().body == b"abcdef"
        assert reader.read_response().body == b"abcdef"


def test_request_body_chunked_and_100_continue(serve):
    server = serve(echo)
    with server.connect() as sock:
        reader = HTTPReader(sock)
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        assert reader.read_response().body == b"/up:abcde"
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 4\r\n\r\n")
        assert reader._line() == b"HTTP/1.1 100 Continue"  # sent when the app reads
        assert reader._line() == b""
        sock.sendall(b"body")
        assert reader.read_response().body == b"/c:body"


def test_no_100_continue_when_app_ignores_body(serve):
    server = serve(hello, keep_alive=False)
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 100000\r\n\r\n")
        reader = HTTPReader(sock)
        resp = reader.read_response()
        assert resp.status == 200 and resp.body == HELLO  # no interim 100 first
        assert reader.at_eof()


def test_ignored_expect_continue_body_closes_keep_alive_connection(serve):
    # The client was never told to send its body: whether it will is unknowable, so
    # the head says Connection: close rather than parse an upload as the next request.
    server = serve(hello)
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 10\r\n\r\n")
        reader = HTTPReader(sock)
        resp = reader.read_response()
        assert resp.body == HELLO and resp.headers["connection"] == "close"
        assert reader.at_eof()


def test_unread_small_body_is_drained_and_keeps_alive(serve):
    server = serve(hello)
    with server.connect() as sock:
        reader = HTTPReader(sock)
        sock.sendall(get(method="POST", body=b"x" * 1000) + get())
        assert reader.read_response().body == HELLO
        assert reader.read_response().body == HELLO
    server.close()
    assert len(server.connections) == 1


def test_unread_large_body_closes_after_a_complete_response(serve):
    server = serve(hello)
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n")
        sent = 0
        reader = HTTPReader(sock)
        sock.settimeout(0.05)
        # keep uploading, as a client that does not look at responses would
        while sent < 2000000:
            try:
                sent += sock.send(b"y" * 65536)
            except (TimeoutError, BlockingIOError):
                break
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(5)
        resp = reader.read_response()
        assert (resp.status, resp.body, resp.complete) == (200, HELLO, True)
        assert resp.headers["connection"] == "close"


def test_app_exception_before_headers_gives_500_and_worker_survives(serve, caplog):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("kaboom")
        return hello(environ, start_response)

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="polycorn.error"):
        with server.connect() as sock:
            sock.sendall(get("/boom"))
            reader = HTTPReader(sock)
            resp = reader.read_response()
            assert resp.status == 500 and resp.headers["connection"] == "close"
            assert b"kaboom" not in resp.body  # no internals leak to the client
            assert reader.at_eof()
        with server.connect() as sock:
            sock.sendall(get("/ok"))
            assert HTTPReader(sock).read_response().body == HELLO
    errors = [r for r in caplog.records if r.name == "polycorn.error"]
    assert errors and errors[0].exc_info and "kaboom" in str(errors[0].exc_info[1])
    assert server.access_log.records[0][1].startswith("500")


def test_app_exception_after_headers_truncates(serve, caplog):
    class Body:
        closed = False

        def __iter__(self):
            yield b"part one"
            raise RuntimeError("midway")

        def close(self):
            Body.closed = True

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body()

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="polycorn.error"), server.connect() as sock:
        sock.sendall(get())
        resp = HTTPReader(sock).read_response()
        assert resp.status == 200 and resp.body == b"part one"
        assert resp.complete is False  # no final chunk: the client knows it is cut
    assert Body.closed
    assert any("midway" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_short_content_length_is_cut_not_completed(serve, caplog):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "10")])
        return iter([b"12345"])

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="polycorn.error"), server.connect() as sock:
        sock.sendall(get())
        reader = HTTPReader(sock)
        resp = reader.read_response()
        assert resp.complete is False and resp.body == b"12345"


def test_client_disconnect_calls_close(serve, caplog):
    closed = threading.Event()

    class Endless:
        def __iter__(self):
            while True:
                yield b"x" * 65536

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [])
        return Endless()

    server = serve(app)
    with caplog.at_level(logging.DEBUG, logger="polycorn.error"):
        sock = server.connect()
        sock.sendall(get())
        HTTPReader(sock).read_head()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # reset
        assert closed.wait(5)
        server.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_client_gone_while_app_reads_body(serve):
    seen = []

    def app(environ, start_response):
        try:
            environ["wsgi.input"].read()
        except OSError as exc:
            seen.append(exc)
            raise
        return hello(environ, start_response)

    server = serve(app)
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\npartial")
        sock.shutdown(socket.SHUT_WR)
        resp = HTTPReader(sock).read_response()
        assert resp.status == 400  # the body ended early: the client's fault
    server.close()
    assert seen and "body" in str(seen[0])


def test_bad_request_gets_its_status_and_close(serve):
    server = serve(hello)
    with server.connect() as sock:
        sock.sendall(b"NOT A REQUEST\r\n\r\n")
        reader = HTTPReader(sock)
        resp = reader.read_response()
        assert resp.status == 400 and resp.headers["connection"] == "close"
        assert reader.at_eof()


def test_idle_client_timeout_ends_quietly(serve, caplog):
    server = serve(hello, sock_timeout=0.2)
    with caplog.at_level(logging.DEBUG, logger="polycorn.error"), server.connect() as sock:
        started = time.monotonic()
        assert HTTPReader(sock).at_eof()  # the server gave up on us
        assert time.monotonic() - started < 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


class CountingReader(io.BufferedReader):
    """A real file (real fd) that counts read() calls, to tell sendfile from iteration."""

    reads = 0

    def read(self, *args):
        CountingReader.reads += 1
        return super().read(*args)


def test_file_wrapper_uses_sendfile(serve, tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    CountingReader.reads = 0

    def app(environ, start_response):
        f = CountingReader(io.FileIO(path, "rb"))
        f.seek(1000)  # the wrapper sends from the current position
        start_response("200 OK", [("Content-Length", str(len(data) - 1000))])
        return environ["wsgi.file_wrapper"](f, 4096)

    server = serve(app)
    with server.connect() as sock:
        sock.sendall(get())
        resp = HTTPReader(sock).read_response()
        assert resp.complete and resp.body == data[1000:]
    server.close()  # the access log is written after the response
    assert CountingReader.reads == 0
    assert server.access_log.records[0][3] == len(data) - 1000


def test_empty_file_with_zero_length(serve, tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "0")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))  # closed by the server

    server = serve(app)
    with server.connect() as sock:
        sock.sendall(get() + get())
        reader = HTTPReader(sock)
        assert reader.read_response().body == b""
        assert reader.read_response().complete


def test_file_wrapper_without_fileno_is_iterated_and_keeps_alive(serve):
    def app(environ, start_response):
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"0123456789" * 1000), 4096)

    server = serve(app)
    with server.connect() as sock:
        sock.sendall(get() + get())
        reader = HTTPReader(sock)
        assert reader.read_response().body == b"0123456789" * 1000
        assert reader.read_response().body == b"0123456789" * 1000


def test_wsgiref_validator_finds_nothing(serve, caplog):
    def app(environ, start_response):
        stream = environ["wsgi.input"]
        first = stream.readline()
        rest = stream.read(int(environ.get("CONTENT_LENGTH") or 0) - len(first))
        environ["wsgi.errors"].write("")
        body = first + rest
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    server = serve(validator(app))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with caplog.at_level(logging.ERROR, logger="polycorn.error"), server.connect() as sock:
            reader = HTTPReader(sock)
            sock.sendall(get("/v?q=1", method="POST", body=b"line\nmore"))
            resp = reader.read_response()
            assert (resp.status, resp.body) == (200, b"line\nmore")
            sock.sendall(get("/v", method="HEAD"))
            assert reader.read_response("HEAD").status == 200
        server.close()
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    assert not caught, [str(w.message) for w in caught]


def test_hooks_get_gunicorn_shaped_objects(serve):
    seen = {}

    def pre_request(worker, req):
        seen["pre"] = (worker, req.method, req.path, req.query, req.uri, req.version,
                       ("X-THING", "1") in req.headers)

    def post_request(worker, req, environ, resp):
        seen["post"] = (req.path, environ["PATH_INFO"], resp.status, resp.status_code,
                        resp.headers, resp.sent)

    server = serve(hello, cfg=make_cfg(pre_request=pre_request, post_request=post_request))
    with server.connect() as sock:
        sock.sendall(get("/p/q?x=1", extra="X-Thing: 1\r\n"))
        HTTPReader(sock).read_response()
    server.close()
    assert seen["pre"] == ("worker-1", "GET", "/p/q", "x=1", "/p/q?x=1", (1, 1), True)
    assert seen["post"][:4] == ("/p/q", "/p/q", "200 OK", 200)
    assert seen["post"][5] == len(HELLO)


def test_access_log_disabled_is_not_called(serve):
    server = serve(hello, access_log=RecordingAccessLog(enabled=False))
    with server.connect() as sock:
        sock.sendall(get())
        HTTPReader(sock).read_response()
    server.close()
    assert server.access_log.records == []


def test_unix_socketpair_peer_and_server_name():
    handler = WSGIHandler(lambda e, s: (s("200 OK", [("Content-Type", "text/plain")]),
                                        [repr((e["REMOTE_ADDR"], e["SERVER_NAME"])).encode()])[1],
                          make_cfg(), None, RecordingAccessLog(enabled=False))
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(5)
        conn = ClientConnection(handler, ours, "", "/run/app.sock", keep_alive=False)
        theirs.sendall(b"GET / HTTP/1.0\r\n\r\n")  # no Host: the listener names the server
        assert conn.serve_one() is False
        conn.close()
        assert HTTPReader(theirs).read_response().body == b"('', '/run/app.sock')"


def test_health_check():
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("not ready")
        code = "200 OK" if environ["HTTP_HOST"] == "localhost" else "404 Not Found"
        start_response(code, [])
        yield b"ok"

    handler = WSGIHandler(app, make_cfg(), None, RecordingAccessLog())
    assert handler.health_check("/health") == 200
    assert handler.health_check("/boom") == 500
    assert handler.access_log.records == []  # not a client request
