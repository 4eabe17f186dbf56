"""Helpers for the WSGI tests: a config namespace with Gunicorn's setting names,
and a recording access log. No dependency on the config module."""

from __future__ import annotations

import socket
import threading
import types
from typing import Any


def make_cfg(**overrides: Any) -> types.SimpleNamespace:
    settings: dict[str, Any] = {
        "forwarded_allow_ips": ["127.0.0.1", "::1"],
        "workers": 1,
        "threads": 1,
        "keepalive": 2,
        "timeout": 30,
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
        "permit_obsolete_folding": False,
        "pre_request": None,
        "post_request": None,
        "sendfile": True,
        "secure_scheme_headers": {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https",
                                  "X-FORWARDED-SSL": "on"},
        "forwarder_headers": ["SCRIPT_NAME", "PATH_INFO"],
        "header_map": "drop",
    }
    settings.update(overrides)
    return types.SimpleNamespace(**settings)


class RecordingAccessLog:
    """The access-log interface (enabled, log(...)) that records its calls."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.records: list[tuple[dict, str, list, int, float]] = []

    def started(self) -> None:
        """A request began (the instruments count requests in flight from it)."""

    def log(self, environ, status, headers, length, seconds) -> None:
        self.records.append((environ, status, headers, length, seconds))


class LoopbackServer:
    """A ClientConnection server on 127.0.0.1 in one thread, as a worker would run it:
    connections are served one after another, each while serve_one() says keep-alive."""

    def __init__(self, app, *, cfg=None, keep_alive: bool = True, access_log=None,
                 sock_timeout: float = 5.0, sliced: bool = False) -> None:
        from polycorn.server.wsgi.handler import WSGIHandler

        self.cfg = cfg or make_cfg()
        self.access_log = access_log or RecordingAccessLog()
        self.handler = WSGIHandler(app, self.cfg, "worker-1", self.access_log)
        self.keep_alive = keep_alive
        self.sock_timeout = sock_timeout
        self.beats = 0  # heartbeats of the sliced waits
        # sliced: wait on clients as the sync worker does (client_waits.py), with
        # sock_timeout as the patience
        self.waits = None
        if sliced:
            from polycorn.server.wsgi.client_waits import ClientWaits

            self.waits = ClientWaits(self._beat, min(0.2, sock_timeout), sock_timeout)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.served_cycles: list[bool] = []  # what each serve_one() returned
        self.connections: list = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from polycorn.server.wsgi.handler import ClientConnection

        while not self._stop.is_set():
            try:
                sock, addr = self.listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(self.sock_timeout)
            conn = ClientConnection(self.handler, sock, addr, self.listener.getsockname(),
                                    keep_alive=self.keep_alive, waits=self.waits)
            self.connections.append(conn)
            try:
                while True:
                    keep = conn.serve_one()
                    self.served_cycles.append(keep)
                    if not keep:
                        break
            finally:
                conn.close()

    def _beat(self) -> None:
        self.beats += 1

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.listener.close()
        assert not self.thread.is_alive(), "server thread did not stop"


class Response:
    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes,
                 complete: bool) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case names; repeated fields joined with ", "
        self.body = body
        self.complete = complete  # False when the connection ended inside the body


class HTTPReader:
    """Reads HTTP/1.1 responses off a client socket, one after another (pipelining-safe)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def _more(self) -> bool:
        if self.eof:
            return False
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._more():
                raise EOFError("connection closed before a full line")
        line, _, rest = bytes(self.buf).partition(b"\r\n")
        self.buf[:] = rest
        return line

    def _exactly(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._more():
                return None
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_head(self) -> tuple[int, str, dict[str, str]]:
        status_line = self._line()
        while status_line == b"":
            status_line = self._line()
        _, code, reason = status_line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := self._line()) != b"":
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
        return int(code), reason, headers

    def read_response(self, method: str = "GET") -> Response:
        code, reason, headers = self.read_head()
        while 100 <= code < 200:
            code, reason, headers = self.read_head()
        if method == "HEAD" or code in (204, 304):
            return Response(code, reason, headers, b"", True)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            try:
                while True:
                    size = int(self._line().split(b";")[0], 16)
                    if size == 0:
                        while self._line() != b"":
                            pass
                        return Response(code, reason, headers, b"".join(parts), True)
                    data = self._exactly(size + 2)
                    if data is None:
                        break
                    parts.append(data[:-2])
            except EOFError:
                pass
            return Response(code, reason, headers, b"".join(parts), False)
        if "content-length" in headers:
            n = int(headers["content-length"])
            data = self._exactly(n)
            if data is None:
                return Response(code, reason, headers, bytes(self.buf), False)
            return Response(code, reason, headers, data, True)
        while self._more():
            pass
        body = bytes(self.buf)
        self.buf.clear()
        return Response(code, reason, headers, body, True)

    def at_eof(self) -> bool:
        """True when the server has closed (and nothing is left unread)."""
        return not self.buf and not self._more()
