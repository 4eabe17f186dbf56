"""Helpers for the event worker's tests: a real server per parser/loop, and a raw HTTP client."""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from polycorn.server import accel
from support.procs import Polycorn, free_port, wait_until

HERE = Path(__file__).resolve().parent

# The three ways the event worker can run: llhttp + uvloop (the `fast` extra), and
# each piece replaced by its standard-library fallback.
VARIANTS = {
    "compiled": {},  # the compiled accelerator over llhttp + uvloop, when built
    "llhttp-uvloop": {"POLYCORN_NO_EXTENSIONS": "1"},
    "pure-parser": {"POLYCORN_PARSER": "python", "POLYCORN_NO_EXTENSIONS": "1"},
    "asyncio-loop": {"POLYCORN_LOOP": "asyncio"},
}


def skip_if_missing(variant: str) -> None:
    """The compiled variant needs the built extension (else it is llhttp-uvloop again)."""
    if variant == "compiled" and accel.native is None:
        pytest.skip(f"no compiled accelerator: {accel.describe()}")


class EventServer:
    """`polycorn -k event` on a free port, serving tests/event/event_app.py."""

    def __init__(self, tmp_path: Path, *flags: str, env: dict | None = None,
                 app: str = "event_app:application") -> None:
        self.port = free_port()
        self.dir = tmp_path
        env = {**(env or {}), "EVENT_APP_DIR": str(tmp_path)}
        self.env = env
        self.server = Polycorn(["-k", "event", "-b", f"127.0.0.1:{self.port}", *flags, app],
                               cwd=HERE, env=env, log_path=tmp_path / f"event-{self.port}.log")
        self.server.wait_port(self.port)

    def worker_pids(self) -> list[int]:
        return self.server.workers()

    def one_worker(self) -> int:
        return wait_until(lambda: (w := self.worker_pids()) and len(w) == 1 and w[0],
                          15, what="one worker")

    ssl_context: ssl.SSLContext | None = None  # set when the server serves TLS

    def connect(self, timeout: float = 10.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.ssl_context is None:
            return sock
        return self.ssl_context.wrap_socket(sock, server_hostname="127.0.0.1")

    def log(self) -> str:
        return self.server.log()

    def stop(self) -> None:
        self.server.stop()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool = True  # False when the connection ended inside the body
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before it


class Reader:
    """Reads responses off one client socket, in order (safe for pipelining)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed, {len(self.buf)} bytes unparsed")
        part, _, self.buf = self.buf.partition(marker)
        return part

    def _take(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._fill():
                return None
        part, self.buf = self.buf[:n], self.buf[n:]
        return part

    def head(self) -> tuple[int, dict[str, str]]:
        lines = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def response(self, method: str = "GET") -> Response:
        status, headers = self.head()
        interim = []
        while 100 <= status < 200:
            interim.append(status)
            status, headers = self.head()
        if method == "HEAD" or status in (204, 304):
            return Response(status, headers, b"", True, interim)
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                try:
                    size = int(self._until(b"\r\n").split(b";")[0], 16)
                except EOFError:
                    return Response(status, headers, body, False, interim)
                if size == 0:
                    self._until(b"\r\n")
                    return Response(status, headers, body, True, interim)
                data = self._take(size + 2)
                if data is None:
                    return Response(status, headers, body + self.buf, False, interim)
                body += data[:-2]
        if "content-length" in headers:
            data = self._take(int(headers["content-length"]))
            if data is None:
                return Response(status, headers, self.buf, False, interim)
            return Response(status, headers, data, True, interim)
        while self._fill():
            pass
        body, self.buf = self.buf, b""
        return Response(status, headers, body, True, interim)

    def closed(self) -> bool:
        """Has the server closed the connection (with nothing left unread)?"""
        return not self.buf and not self._fill()


def request(method: str = "GET", target: str = "/", body: bytes = b"", *,
            headers: str = "", version: str = "1.1") -> bytes:
    head = f"{method} {target} HTTP/{version}\r\nHost: test\r\n{headers}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"\r\n" + body


def exchange(server: EventServer, data: bytes, *, method: str = "GET",
             half_close: bool = False) -> Response:
    """One request on a fresh connection; the response."""
    with contextlib.closing(server.connect()) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return Reader(sock).response(method)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")
