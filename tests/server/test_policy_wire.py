"""The request-cycle policy (server/wsgi/policy.py) on the wire, for every worker class.

Each row of the policy's table that a client or an operator can see is pinned here
through a real polycorn: the status, whether the connection is cut, closed or kept,
and what the access log and post_request record (they write to one notes file, with
the app iterable's close(), so their order shows too). The rows with no trace on the
wire are pinned by tests/wsgi/test_policy.py.
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from support.http import get as http_get
from support.procs import ROOT, Polycorn, free_port, wait_until

APPS = ROOT / "tests" / "apps"
# The event worker twice: on uvloop (a file body is iterated) and on asyncio's own
# loop (a file body goes by os.sendfile, as in the blocking workers).
WORKERS = {
    "sync": ("-k", "sync"),
    "thread": ("-k", "thread", "--threads", "1"),
    "event": ("-k", "event"),
    "event-asyncio": ("-k", "event"),
    "asgi": ("-k", "asgi"),
}
SENDFILE = {"sync", "thread", "event-asyncio"}
# -k asgi serves cycleapp's ASGI twin (same routes; see its docstring for the mapping).
APP = {"asgi": "asgi_cycleapp:app"}


class Server:
    def __init__(self, kind: str, tmp) -> None:
        self.kind = kind
        self.port = free_port()
        self.notes = tmp / "notes.log"
        self.notes.touch()
        short = tmp / "short.bin"
        short.write_bytes(b"s" * 1000)  # it claims 100000 bytes
        env = {"CYCLE_NOTES": str(self.notes), "CYCLE_SHORT_FILE": str(short)}
        if kind == "event-asyncio":
            env["POLYCORN_LOOP"] = "asyncio"
        self.proc = Polycorn([*WORKERS[kind], "-w", "1", "--keep-alive", "5",
                              "-c", str(APPS / "cycle_conf.py"), "-b", f"127.0.0.1:{self.port}",
                              APP.get(kind, "cycleapp:application")],
                             cwd=APPS, env=env, log_path=tmp / "polycorn.log")
        self.proc.wait_port(self.port)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def lines(self, path: str) -> list[str]:
        """The notes about one request path, in the order they were written."""
        return [line for line in self.notes.read_text().splitlines()
                if line.split(" ")[1:2] == [path]]

    def wait_lines(self, path: str, count: int) -> list[str]:
        wait_until(lambda: len(self.lines(path)) >= count, 10, what=f"{count} notes on {path}")
        return self.lines(path)


@pytest.fixture(scope="module", params=list(WORKERS))
def server(request, tmp_path_factory):
    srv = Server(request.param, tmp_path_factory.mktemp(request.param))
    yield srv
    srv.proc.stop()


def unique(kind: str) -> str:
    return f"/{kind}/{uuid.uuid4().hex[:12]}"


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


def read_all(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything until the server closes; and whether it ended by a reset."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        return out, True
    return out, False


def exchange(server: Server, *paths: str) -> tuple[str, dict[str, str], bytes, bytes]:
    """GET each path, pipelined on one connection; read until the server closes:
    the first response's status line, headers and body, and all that came."""
    with server.connect() as sock:
        sock.sendall(b"".join(get(path) for path in paths))
        data, _ = read_all(sock)
    return (*head_and_body(data), data)


def head_and_body(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


def test_app_error_before_the_head_is_a_500_logged_with_no_body_bytes(server):
    path = unique("error")
    # The second request is never answered.
    status, headers, body, data = exchange(server, path, unique("ok"))
    assert status == "HTTP/1.1 500 Internal Server Error"
    assert headers["connection"] == "close"
    assert data.count(b"HTTP/1.1") == 1 and len(body) == int(headers["content-length"])
    # An error page is the server's: 0 body bytes, as Gunicorn's handle_error logs it.
    assert server.wait_lines(path, 2) == [f"access {path} 500 0", f"post {path} 500 0"]
    assert "app failure before start_response" in server.proc.log()


def test_a_head_the_server_refuses_is_a_500_logged_with_no_body_bytes(server):
    """A header the app gave that cannot go on the wire (a CR in its value) fails the
    cycle before any byte of the head went out: the app's 500, not a cut connection."""
    path = unique("bad-header")
    status, headers, body, data = exchange(server, path, unique("ok"))
    assert status == "HTTP/1.1 500 Internal Server Error" and b"X-Injected" not in data
    assert headers["connection"] == "close" and data.count(b"HTTP/1.1") == 1
    notes = [f"access {path} 500 0", f"post {path} 500 0"]
    if server.kind == "asgi":
        # WSGI's start_response refuses it inside the app, before any iterable exists;
        # ASGI's send() does, and the app's sending ends (its "close") before the log.
        notes.insert(0, f"close {path}")
    assert server.wait_lines(path, len(notes)) == notes


def assert_next_client_not_held(server: Server, first: bytes, status: bytes) -> None:
    """`first` is answered `status` and closed while its client stays connected; the
    next client must not wait for that client's FIN (a lingering close lasts 1 s and
    holds a one-worker sync server idle)."""
    with server.connect() as idle:
        idle.sendall(first)
        data, _ = read_all(idle)  # EOF: the server closed its side; ours stays open
        assert data.startswith(b"HTTP/1.1 " + status)
        started = time.monotonic()
        with server.connect() as sock:
            sock.sendall(get(unique("ok")))
            reply = sock.recv(65536)
        elapsed = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 200")
    assert elapsed < 0.6, f"the next client waited {elapsed:.2f} s (a lingering close is 1 s)"


def test_a_500_does_not_hold_the_worker_while_its_client_stays(server):
    """Nothing more to read from the client: the 500 closes at once, no lingering."""
    assert_next_client_not_held(server, get(unique("error")), b"500")


def test_a_closing_response_to_a_request_without_a_body_does_not_hold_the_worker(server):
    """A GET has no body to wait for: its closing response ends at once, with no
    lingering second for the client's FIN (every sync response closes)."""
    closing = get(unique("ok")).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    assert_next_client_not_held(server, closing, b"200")


def test_an_app_error_after_the_head_cuts_the_response(server):
    path, after = unique("midway"), unique("ok")
    status, headers, body, data = exchange(server, path, after)
    assert status == "HTTP/1.1 200 OK" and headers["transfer-encoding"] == "chunked"
    assert b"part one" in body and not body.endswith(b"0\r\n\r\n")  # no last chunk
    assert data.count(b"HTTP/1.1") == 1  # the pipelined request is not answered
    wait_until(lambda: server.lines(path), 10, what="the iterable closed")
    time.sleep(0.2)  # a log line, if one were coming, comes right after the close
    assert server.lines(path) == [f"close {path}"]  # neither access log nor post_request
    assert server.lines(after) == []
    assert "midway failure" in server.proc.log()


def test_a_client_leaving_mid_body_is_logged_with_the_bytes_sent(server):
    path = unique("stream")
    with server.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(get(path))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
    lines = server.wait_lines(path, 3)
    assert lines[0] == f"close {path}"
    assert [line.rsplit(" ", 1)[0] for line in lines[1:]] == [f"access {path} 200",
                                                                f"post {path} 200"]
    sent = int(lines[1].rsplit(" ", 1)[1])
    assert 0 < sent < 4000 * 65536 and lines[2] == f"post {path} 200 {sent}"


def test_head_logs_no_body_bytes(server):
    path = unique("ok")
    with server.connect() as sock:
        sock.sendall(get(path, "HEAD"))
        reply = sock.recv(65536)
    status, headers, body = head_and_body(reply)
    assert status == "HTTP/1.1 200 OK" and headers["content-length"] == "5" and body == b""
    assert server.wait_lines(path, 3) == [f"close {path}", f"access {path} 200 0",
                                          f"post {path} 200 0"]


def test_close_then_access_log_then_post_request(server):
    path = unique("ok")
    with server.connect() as sock:
        sock.sendall(get(path))
        assert sock.recv(65536).endswith(b"\r\n\r\nhello")
    assert server.wait_lines(path, 3) == [f"close {path}", f"access {path} 200 5",
                                          f"post {path} 200 5"]


def test_a_failing_close_ends_the_connection_after_a_whole_response(server):
    path, after = unique("close-raises"), unique("ok")
    if server.kind == "asgi":
        return assert_asgi_raise_after_a_whole_response_keeps_the_connection(server, path, after)
    status, headers, body, data = exchange(server, path, after)
    assert status == "HTTP/1.1 200 OK" and body == b"hello"  # whole, then closed
    assert server.wait_lines(path, 3) == [f"close {path}", f"access {path} 200 5",
                                          f"post {path} 200 5"]
    assert server.lines(after) == []
    assert "error closing the response iterable" in server.proc.log()


def assert_asgi_raise_after_a_whole_response_keeps_the_connection(server, path, after):
    """A true ASGI difference (docs/internals.md, "The request cycle under -k asgi"): an
    ASGI response ends with its last send, not with an iterable's close(), and the
    connection goes on to its next request then (a pipelined one runs while the app
    finishes, as under uvicorn). The app raising after that is logged with its
    traceback and the request is observed whole, but the connection is not ended: the
    next request did nothing wrong and may be under way already."""
    last = get(after).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    with server.connect() as sock:
        sock.sendall(get(path) + last)
        data, _ = read_all(sock)
    assert data.count(b"HTTP/1.1 200 OK") == 2 and data.endswith(b"\r\n\r\nhello"), data
    assert server.wait_lines(path, 3) == [f"close {path}", f"access {path} 200 5",
                                          f"post {path} 200 5"]
    assert server.wait_lines(after, 3) == [f"close {after}", f"access {after} 200 5",
                                           f"post {after} 200 5"]
    assert "Exception in ASGI application after its response" in server.proc.log()
    assert "close failure" in server.proc.log()


def test_a_file_shorter_than_its_length_is_cut(server):
    path = unique("short-file")
    status, headers, body, _ = exchange(server, path, unique("ok"))
    assert status == "HTTP/1.1 200 OK" and headers["content-length"] == "100000"
    assert body == b"s" * 1000  # cut short, never padded, and nothing after it
    if server.kind in SENDFILE:
        assert server.wait_lines(path, 2) == [f"access {path} 200 1000", f"post {path} 200 1000"]
        wait_until(lambda: "shorter than its Content-Length" in server.proc.log(), 10,
                   what="the error line")


@pytest.mark.parametrize("worker", ["sync", "thread", "event", "asgi"])
def test_max_requests_counts_requests_given_to_the_app(polycorn, port, worker):
    """A connection closed without a request, or a refused head, is not a request
    served: only what reached the app counts toward --max-requests (Gunicorn's
    handle_request), which the event worker already did."""
    app = "asgi_testapp:app" if worker == "asgi" else "testapp:application"
    server = polycorn("-k", worker, "-w", "1", "--max-requests", "3", "-b", f"127.0.0.1:{port}",
                      app, wait_port=port, cwd=APPS)
    first = wait_until(lambda: (w := server.workers()) and len(w) == 1 and w[0], 10,
                       what="one worker")
    for _ in range(4):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"BAD\r\n\r\n")
            assert read_all(sock)[0].startswith(b"HTTP/1.1 400")
    assert [http_get(port, "/pid")[1] for _ in range(3)] == [str(first).encode()] * 3
    # The third request reached the limit: that worker is replaced.
    wait_until(lambda: (w := server.workers()) and first not in w, 10, what="a new worker")
