"""The event worker over real sockets: keep-alive, pipelining, bodies both ways, errors, backpressure.

One real server per variant (llhttp+uvloop, the pure parser, the asyncio loop),
shared by the tests of this module; each test opens its own connections.
"""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
import time
from pathlib import Path

import pytest
from event_app import FILE_NAME, FILE_SIZE
from event_support import (
    VARIANTS,
    EventServer,
    Reader,
    exchange,
    request,
    rss_kib,
    skip_if_missing,
)
from support.procs import wait_until


@pytest.fixture(scope="module", params=list(VARIANTS))
def server(request, tmp_path_factory):
    skip_if_missing(request.param)
    srv = EventServer(tmp_path_factory.mktemp("event"), "-w", "1", "--keep-alive", "5",
                      env=VARIANTS[request.param])
    yield srv
    srv.stop()


def test_the_boot_log_names_the_request_path(server) -> None:
    """Each worker says whether the compiled accelerator or the pure path serves."""
    line = wait_until(lambda: next((ln for ln in server.log().splitlines()
                                    if "request path" in ln), None), 10, what="boot line")
    env = server.env
    if "POLYCORN_NO_EXTENSIONS" in env:
        assert "pure Python: POLYCORN_NO_EXTENSIONS is set" in line, line
    elif env.get("POLYCORN_PARSER") != "python":
        assert "compiled accelerator" in line and "parser AccelConnection" in line, line


def echo_of(response) -> dict:
    assert response.status == 200, response
    return json.loads(response.body)


def test_keep_alive_serves_many_requests_on_one_connection(server) -> None:
    with contextlib.closing(server.connect()) as sock:
        reader = Reader(sock)
        pids = set()
        for i in range(20):
            sock.sendall(request(target=f"/n{i}"))
            assert echo_of(reader.response())["uri"] == f"/n{i}"
            sock.sendall(request(target="/_/pid"))
            pids.add(reader.response().body)
        assert len(pids) == 1
        assert not reader.buf


def test_pipelined_requests_are_answered_in_order(server) -> None:
    burst = b"".join(request("POST", f"/p{i}", b"body%d" % i) for i in range(50))
    burst += request(target="/last", headers="Connection: close\r\n")
    with contextlib.closing(server.connect()) as sock:
        sock.sendall(burst)
        reader = Reader(sock)
        for i in range(50):
            echo = echo_of(reader.response())
            assert (echo["uri"], echo["body"]) == (f"/p{i}", f"body{i}")
        last = reader.response()
        assert echo_of(last)["uri"] == "/last"
        assert last.headers["connection"] == "close"
        assert reader.closed()


def test_pipelined_after_close_request_are_not_answered(server) -> None:
    data = request(headers="Connection: close\r\n") + request(target="/never")
    with contextlib.closing(server.connect()) as sock:
        sock.sendall(data)
        reader = Reader(sock)
        assert reader.response().headers["connection"] == "close"
        assert reader.closed()  # and no reset destroyed the first response


def test_http10_closes_unless_keep_alive_asked(server) -> None:
    with contextlib.closing(server.connect()) as sock:
        sock.sendall(request(version="1.0"))
        reader = Reader(sock)
        assert echo_of(reader.response())["protocol"] == "HTTP/1.0"
        assert reader.closed()
    with contextlib.closing(server.connect()) as sock:
        reader = Reader(sock)
        for _ in range(2):
            sock.sendall(request(version="1.0", headers="Connection: keep-alive\r\n"))
            response = reader.response()
            assert response.headers["connection"] == "keep-alive"


def test_head_keeps_the_length_and_sends_no_body(server) -> None:
    with contextlib.closing(server.connect()) as sock:
        reader = Reader(sock)
        sock.sendall(request("HEAD", "/_/pid") + request(target="/after"))
        head = reader.response("HEAD")
        assert head.status == 200 and head.body == b""
        assert int(head.headers["content-length"]) > 0
        assert echo_of(reader.response())["uri"] == "/after"  # nothing stray in between


def test_chunked_request_body_is_decoded(server) -> None:
    body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
    response = exchange(server, request("POST", "/up", headers="Transfer-Encoding: chunked\r\n")
                        + body)
    echo = echo_of(response)
    assert echo["body"] == "hello, world" and echo["content_length"] is None


def test_generator_body_is_sent_chunked(server) -> None:
    response = exchange(server, request(target="/_/chunked"))
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.body == b"part0;part1;part2;part3;part4;"


def test_large_body_posts_are_echoed_whole(server) -> None:
    body = bytes(range(256)) * 8192  # 2 MiB: past the in-memory limit, spooled to a file
    echo = echo_of(exchange(server, request("POST", "/big-upload", body)))
    assert echo["body"].encode("latin-1") == body


def test_expect_100_continue_is_answered_before_the_body(server) -> None:
    with contextlib.closing(server.connect()) as sock:
        sock.sendall(request("POST", "/c", headers="Expect: 100-continue\r\nContent-Length: 4\r\n"))
        sock.settimeout(5)
        interim = sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"data")
        response = Reader(sock).response()
        assert echo_of(response)["body"] == "data"


@pytest.mark.parametrize(("data", "status"), [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),  # default limit 8190
    (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\n\r\n", 417),
    (b"GET / HTTP/1.1\r\nHost: t\r\n folded: no\r\n\r\n", 400),
])
def test_bad_requests_get_their_status_and_a_close(server, data: bytes, status: int) -> None:
    with contextlib.closing(server.connect()) as sock:
        sock.sendall(data)
        reader = Reader(sock)
        response = reader.response()
        assert response.status == status
        assert response.headers["connection"] == "close"
        assert reader.closed()


def test_pep3333_write_is_sent_before_the_iterable(server) -> None:
    assert exchange(server, request(target="/_/write")).body == b"helloworld"


def test_app_exception_is_a_500_and_the_worker_lives_on(server) -> None:
    response = exchange(server, request(target="/_/fail"))
    assert response.status == 500 and response.headers["connection"] == "close"
    assert echo_of(exchange(server, request(target="/fine")))["uri"] == "/fine"


def test_exception_midway_cuts_the_response(server) -> None:
    response = exchange(server, request(target="/_/fail-midway"))
    assert response.status == 200 and not response.complete
    assert response.body == b"first;"


def test_file_wrapper_sends_the_whole_file(server) -> None:
    with contextlib.closing(server.connect()) as sock:
        sock.sendall(request(target="/_/file") + request(target="/after"))
        reader = Reader(sock)
        response = reader.response()
        assert len(response.body) == FILE_SIZE
        assert response.body[:256] == bytes(range(256))
        if response.headers.get("connection") == "close":  # sent by sendfile(2)
            assert reader.closed()
        else:
            assert echo_of(reader.response())["uri"] == "/after"
    # The payload sits in the test's directory, removed with it, not in the shared temp dir.
    assert (server.dir / FILE_NAME).stat().st_size == FILE_SIZE
    assert not list(Path(tempfile.gettempdir()).glob(f"polycorn-event-test-{server.one_worker()}.*"))


def test_a_client_that_does_not_read_does_not_grow_the_worker(server, tmp_path) -> None:
    """Backpressure: a 256 MiB response to a client that reads nothing stays in the app."""
    worker = server.one_worker()
    counter = tmp_path / "produced"
    before = rss_kib(worker)
    with contextlib.closing(server.connect()) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(request(target="/_/big?mb=256", headers=f"X-Counter-File: {counter}\r\n"))
        wait_until(counter.exists, 10, what="the app to start producing")
        time.sleep(1.0)  # let the worker run as far as it would go
        produced = int(counter.read_text())
        # The app is suspended once the socket buffers and the write buffer are full:
        # far fewer than the 4096 chunks of 64 KiB it would make.
        assert produced < 512, produced
        assert rss_kib(worker) - before < 64 * 1024
        # The loop is not stuck on it: another client is served meanwhile.
        assert echo_of(exchange(server, request(target="/other")))["uri"] == "/other"
        # Reading resumes the app, which then finishes its response.
        reader = Reader(sock)
        status, headers = reader.head()
        remaining = int(headers["content-length"]) - len(reader.buf)
        while remaining > 0:
            remaining -= len(sock.recv(1 << 20))
        assert remaining == 0
    assert int(counter.read_text()) == 256 * 16


def test_pipelined_requests_wait_while_a_response_is_blocked(server) -> None:
    """A client that pipelines many large responses without reading gets them one at a time."""
    worker = server.one_worker()
    before = rss_kib(worker)
    with contextlib.closing(server.connect()) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(request(target="/_/big?mb=4") * 64)  # 256 MiB of answers requested
        time.sleep(1.0)
        assert rss_kib(worker) - before < 64 * 1024
        assert echo_of(exchange(server, request(target="/other")))["uri"] == "/other"


def test_a_client_leaving_mid_response_stops_the_app(server, tmp_path) -> None:
    counter = tmp_path / "produced"
    with contextlib.closing(server.connect()) as sock:
        sock.sendall(request(target="/_/big?mb=256", headers=f"X-Counter-File: {counter}\r\n"))
        Reader(sock).head()
    wait_until(counter.exists, 10, what="the app to start producing")
    time.sleep(1.0)
    stopped_at = int(counter.read_text())
    time.sleep(0.5)
    assert int(counter.read_text()) == stopped_at < 256 * 16  # suspended, then closed
    assert echo_of(exchange(server, request(target="/next")))["uri"] == "/next"
