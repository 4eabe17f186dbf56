"""HTTP/1.1 on the wire, through a running polycorn, for every worker class.

Raw sockets only (over TCP, and over TLS: `server` runs each case on both), so nothing
is normalised on the way: framing, keep-alive,
pipelining, 100-continue, HEAD, chunked responses, limits and the smuggling
cases (a request hidden behind a framing conflict must never reach the app).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from support.procs import ROOT, descendants, kill_all, wait_until
from support.tls import HalfClosingTLS

APPS = ROOT / "tests" / "apps"
WORKERS = ["sync", "thread", "event", "asgi"]


def wire_app(worker: str) -> str:
    """wireapp's WSGI app, or its ASGI twin (same answers) for -k asgi."""
    return "wireapp:asgi_application" if worker == "asgi" else "wireapp:application"


# Every case runs over plain TCP and over TLS (--certfile): the HTTP layer's strictness
# must be the same whatever carries it. The port says which: TLS_CLIENTS maps a TLS
# server's port to the client context that trusts it.
TRANSPORTS = ["tcp", "tls"]
TLS_CLIENTS: dict[int, ssl.SSLContext] = {}


@pytest.fixture(params=[(w, t) for w in WORKERS for t in TRANSPORTS],
                ids=lambda p: p[0] if p[1] == "tcp" else f"{p[0]}-tls")
def server(request, polycorn, port, tmp_path):
    worker, transport = request.param
    log = tmp_path / "wire.log"
    log.touch()
    threads = ("--threads", "4") if worker == "thread" else ()  # sync + threads = thread
    tls: tuple[str, ...] = ()
    if transport == "tls":
        pki = request.getfixturevalue("pki")
        tls = ("--certfile", str(pki.cert), "--keyfile", str(pki.key))
        TLS_CLIENTS[port] = pki.client_context()
    polycorn("-k", worker, *threads, "-b", f"127.0.0.1:{port}", *tls,
             "--limit-request-line", "200", "--limit-request-fields", "10",
             wire_app(worker), wait_port=port, cwd=APPS, env={"WIRE_LOG": str(log)})
    yield worker, port, log
    TLS_CLIENTS.pop(port, None)


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    """A client connection to the server on port: TLS if it serves TLS."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    context = TLS_CLIENTS.get(port)
    if context is None:
        return sock
    return context.wrap_socket(sock, server_hostname="127.0.0.1")


def connect_half_closable(port: int) -> Any:
    """connect(), but over TLS a client whose shutdown(SHUT_WR) is TLS's half-close
    (close_notify), which ssl.SSLSocket cannot do while still reading the answer."""
    context = TLS_CLIENTS.get(port)
    return connect(port) if context is None else HalfClosingTLS(port, context)


def exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send, then read until the server closes (or stays silent for timeout)."""
    with connect(port, timeout) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def seen(log) -> list[str]:
    return log.read_text().splitlines()


SMUGGLING = {
    # RFC 9112 6.1: Transfer-Encoding with Content-Length is rejected, and the
    # connection closed: the bytes after the head are never parsed as a request.
    "CL and TE": (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "TE and CL": (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 40\r\n\r\n0\r\n\r\n"),
    # RFC 9112 6.3: differing Content-Length values.
    "two Content-Lengths": (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                            b"Content-Length: 41\r\n\r\n"),
    # RFC 9112 6.1: chunked must be the final coding.
    "chunked not last": (b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                         b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
    # RFC 9112 5.1: whitespace before the colon.
    "space before colon": (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n"
                           b"Content-Length: 4\r\n\r\n0\r\n\r\n"),
    # RFC 9112 5.2: obsolete line folding hides a header.
    "obs-fold": (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                 b"X-Folded: a\r\n Transfer-Encoding: chunked\r\n\r\n"),
    # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0.
    "TE in HTTP/1.0": (b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    # RFC 9112 7.1: a chunk size that is not hex digits.
    "bad chunk size": (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"+4\r\nabcd\r\n0\r\n\r\n"),
}
HIDDEN = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_a_hidden_request_never_reaches_the_app(server, case):
    _, port, log = server
    reply = exchange(port, SMUGGLING[case] + HIDDEN)
    assert reply.startswith((b"HTTP/1.1 400", b"HTTP/1.1 501")), reply[:80]
    assert reply.count(b"HTTP/1.1 ") == 1  # one answer, then the connection closed
    assert b"connection: close" in reply.lower()
    time.sleep(0.2)
    assert not any("/smuggled" in line for line in seen(log))


def test_pipelined_requests_are_answered_in_order(server):
    worker, port, log = server
    reqs = b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3))
    reply = exchange(port, reqs + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    if worker == "sync":
        # Gunicorn's sync worker answers one request per connection, with Connection: close.
        assert reply.count(b"HTTP/1.1 200") == 1 and seen(log) == ["GET /p0"]
    else:
        assert reply.count(b"HTTP/1.1 200") == 4
        assert seen(log) == ["GET /p0", "GET /p1", "GET /p2", "GET /last"]


def test_keep_alive_serves_several_requests_on_one_connection(server):
    worker, port, _ = server
    with connect(port) as sock:
        answers = 0
        for i in range(3):
            try:
                sock.sendall(b"GET /k%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                data = sock.recv(65536)
            except (BrokenPipeError, ConnectionResetError):
                data = b""
            if not data:
                break
            answers += data.count(b"HTTP/1.1 200")
    assert answers == (1 if worker == "sync" else 3)


def test_expect_100_continue_before_the_body(server):
    _, port, _ = server
    with connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        rest = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        sock.sendall(b"hello")
        while b"hello" not in rest:
            rest += sock.recv(65536)
    assert rest.startswith(b"HTTP/1.1 200")


def test_head_has_length_but_no_body(server):
    _, port, _ = server
    reply = exchange(port, b"HEAD /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 2" in head
    assert body == b""


def test_streaming_responses_are_chunked(server):
    _, port, _ = server
    reply = exchange(port, b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"7\r\npart 0\n\r\n7\r\npart 1\n\r\n7\r\npart 2\n\r\n0\r\n\r\n"


def test_http10_without_length_is_close_delimited(server):
    _, port, _ = server
    reply = exchange(port, b"GET /stream HTTP/1.0\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and body == b"part 0\npart 1\npart 2\n"


def test_chunked_request_body(server):
    _, port, _ = server
    reply = exchange(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-T: 1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n\r\nabcde")


@pytest.mark.parametrize("raw,status", [
    (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(12))
     + b"\r\n", b"431"),
    (b"GET / HTTP/1.1\r\n\r\n", b"400"),  # RFC 9112 3.2: HTTP/1.1 needs Host
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", b"505"),
    # RFC 9112 3.2.2: absolute-form is an http(s) URI with a valid authority.
    (b"PUT s://]ufd/: HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"400"),
    (b"GET http://[bad/x HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    # RFC 9110 5.3: Content-Type is a singleton field (Gunicorn refuses a repeat too).
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n"
     b"Content-Length: 0\r\n\r\n", b"400"),
])
def test_limits_and_bad_heads(server, raw, status):
    _, port, log = server
    reply = exchange(port, raw)
    assert reply.startswith(b"HTTP/1.1 " + status), reply[:60]
    assert seen(log) == []


def test_a_body_that_ends_early_is_never_complete(server):
    _, port, _ = server
    with connect_half_closable(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        sock.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    # Never a 200 carrying the three bytes as if they were the whole body.
    assert not (out.startswith(b"HTTP/1.1 200") and out.endswith(b"abc"))


def names(reply: bytes) -> list[str]:
    """wireapp's /names answer: SERVER_NAME, SERVER_PORT, PATH_INFO, SERVER_PROTOCOL, CONTENT_TYPE."""
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), reply[:80]
    return body.decode("latin-1").split("|")


def test_an_http09_request_is_refused_at_once(server):
    # "GET /" and CRLF, no version: an HTTP/0.9 client sends nothing more and waits. It
    # gets its 400 when its line is in, not a silent close after a timeout.
    _, port, log = server
    started = time.monotonic()
    reply = exchange(port, b"GET /\r\n")
    assert reply.startswith(b"HTTP/1.1 400"), reply[:60]
    assert time.monotonic() - started < 3.0  # the read gives up at 5 s, --timeout is 30 s
    assert seen(log) == []


def test_http12_is_served_as_http11(server):
    # RFC 9110 2.5: a higher minor version is processed as the highest we implement.
    _, port, _ = server
    reply = exchange(port, b"GET /names HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert names(reply)[2:4] == ["/names", "HTTP/1.1"]


def test_server_name_is_the_address_the_request_arrived_on(server):
    # RFC 3875 4.1.14-15, and Gunicorn: not what the client wrote in Host.
    _, port, _ = server
    reply = exchange(port, b"GET /names HTTP/1.1\r\nHost: other.example:9999\r\n"
                           b"Connection: close\r\n\r\n")
    assert names(reply)[:2] == ["127.0.0.1", str(port)]


def test_an_absolute_form_target_gives_its_path(server):
    _, port, _ = server
    reply = exchange(port, b"GET http://other.example:9999/names?q=1 HTTP/1.1\r\nHost: x\r\n"
                           b"Connection: close\r\n\r\n")
    assert names(reply)[:3] == ["127.0.0.1", str(port), "/names"]


@pytest.fixture
def short_folder():
    """A folder for a Unix socket: its path has 107 bytes at most, and a --basetemp can be
    deep. Asked for before `polycorn`, it is removed after the server was stopped."""
    with tempfile.TemporaryDirectory(prefix="polycorn-wire-") as folder:
        yield Path(folder)


@pytest.fixture(params=WORKERS)
def default_server(request, short_folder, polycorn, port):
    """A server with the default limits, on a TCP and a Unix-socket listener."""
    path = short_folder / "wire.sock"
    threads = ("--threads", "4") if request.param == "thread" else ()
    polycorn("-k", request.param, *threads, "-b", f"127.0.0.1:{port}", "-b", f"unix:{path}",
             wire_app(request.param), wait_port=port, cwd=APPS)
    wait_until(path.exists, 10, what="the Unix socket")
    return port, path


def test_default_limits_serve_an_8000_octet_request_line(default_server):
    # RFC 9112 3: "a minimum request-line length of 8000 octets" is recommended.
    port, _ = default_server
    line = b"GET /names?" + b"q" * (8000 - len(b"GET /names? HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 8000
    assert names(exchange(port, line + b"\r\nHost: x\r\nConnection: close\r\n\r\n"))[2] == "/names"


def test_a_unix_listener_is_named_by_the_host_header(default_server):
    # A Unix socket has no host or port: Host names the server, else its path (Gunicorn).
    _, path = default_server

    def ask(raw: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(raw)
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
        return out
    reply = ask(b"GET /names HTTP/1.1\r\nHost: site.example:8080\r\nConnection: close\r\n\r\n")
    assert names(reply)[:2] == ["site.example", "8080"]
    assert names(ask(b"GET /names HTTP/1.0\r\n\r\n"))[:2] == [str(path), ""]


# Run inside a private network namespace (only its own loopback), so that a wildcard
# listener is reachable from nowhere else: the client asks 127.0.0.2, one address of it.
_WILDCARD_CLIENT = """
import socket, sys, time
deadline = time.monotonic() + 15
while True:
    try:
        sock = socket.create_connection(("127.0.0.2", 8000), timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
sock.sendall(b"GET /names HTTP/1.1\\r\\nHost: other.example:9999\\r\\nConnection: close\\r\\n\\r\\n")
out = b""
while chunk := sock.recv(65536):
    out += chunk
sys.stdout.write(out.decode("latin-1"))
"""


@pytest.mark.parametrize("worker", WORKERS)
def test_a_wildcard_listener_names_the_address_the_request_arrived_on(worker, tmp_path):
    # Gunicorn would say "0.0.0.0"; the request arrived on 127.0.0.2 (RFC 3875 4.1.14).
    threads = "--threads 4" if worker == "thread" else ""
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            ["unshare", "--net", "sh", "-c",
             f"ip link set lo up && exec {sys.executable} -m polycorn.server.main -k {worker} "
             f"{threads} -b 0.0.0.0:8000 {wire_app(worker)}"],
            cwd=APPS, stdout=log, stderr=log, start_new_session=True)
    try:
        # nsenter must not join our own namespace, which the server has until unshare ran.
        ours = os.readlink("/proc/self/ns/net")
        wait_until(lambda: os.readlink(f"/proc/{server.pid}/ns/net") != ours, 10,
                   what="the server's own network namespace")
        client = subprocess.run(
            ["nsenter", "-t", str(server.pid), "-n", sys.executable, "-c", _WILDCARD_CLIENT],
            capture_output=True, timeout=30)
        assert client.returncode == 0, client.stderr.decode()[-2000:]
        assert names(client.stdout)[:2] == ["127.0.0.2", "8000"]
    finally:
        kill_all([server.pid, *descendants(server.pid)], signal.SIGKILL)
        server.wait(5)
