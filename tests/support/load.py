"""Steady load on loopback that counts every failed request.

Client threads send GETs in a loop, half on fresh connections and half on
keep-alive connections. A request fails when the connection is refused or
reset, times out, the response is truncated, or the status is 5xx. One case is
retried, as every HTTP client does (RFC 9112 9.3.1): a request on a *reused*
keep-alive connection that the server closed before sending a single byte
(the idle-close race); such retries are counted apart and reported.
"""

from __future__ import annotations

import collections
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    retried: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)
    bodies: collections.Counter = field(default_factory=collections.Counter)
    timeline: list = field(default_factory=list)  # (monotonic, body or error) per request
    spans: list = field(default_factory=list)  # (started, ended, ok, body or error), monotonic
    # (started, ended, error, client port or None) of each failure: the port finds the
    # request in a proxy's log (HAProxy logs the client's address and port).
    failures: list = field(default_factory=list)

    def summary(self) -> str:
        return (f"ok={self.ok} failed={self.failed} retried={self.retried} "
                f"errors={dict(self.errors)} bodies={dict(self.bodies)}")


class _Idle(Exception):
    """The server closed a reused connection before answering: retry on a new one."""


class Load:
    def __init__(self, ports: list[int] | int, path: str = "/version", *, threads: int = 4,
                 timeout: float = 10.0, host: str = "127.0.0.1",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context  # HTTPS when given (tests/server/test_tls_reload.py)
        self.ports = [ports] if isinstance(ports, int) else list(ports)
        self.path = path
        self.threads = threads
        self.timeout = timeout
        self.host = host
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for i in range(self.threads):
            keep_alive = i % 2 == 1
            t = threading.Thread(target=self._run, args=(i, keep_alive), daemon=True)
            t.start()
            self._workers.append(t)

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._workers:
            t.join(self.timeout + 5)
        return self.result

    def wait_requests(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        start = self.result.ok
        while self.result.ok - start < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"load made no progress: {self.result.summary()}")
            time.sleep(0.01)

    def _record(self, ok: bool, what: str, started: float | None = None,
                client_port: int | None = None) -> None:
        ended = time.monotonic()
        with self._lock:
            if ok:
                self.result.ok += 1
                self.result.bodies[what] += 1
            else:
                self.result.failed += 1
                self.result.errors[what] += 1
                self.result.failures.append(
                    (ended if started is None else started, ended, what, client_port))
            self.result.timeline.append((ended, ok, what))
            self.result.spans.append((ended if started is None else started, ended, ok, what))

    def _run(self, index: int, keep_alive: bool) -> None:
        conn: http.client.HTTPConnection | None = None
        reused = False
        n = 0
        while not self._stop.is_set():
            port = self.ports[(index + n) % len(self.ports)]
            n += 1
            started = time.monotonic()
            if conn is None or not keep_alive or conn.port != port:
                if conn is not None:
                    conn.close()
                conn, reused = self._connection(port), False
            try:
                try:
                    body, will_close = self._request(conn, keep_alive, reused)
                except _Idle:
                    with self._lock:
                        self.result.retried += 1
                    conn.close()
                    conn = self._connection(port)
                    body, will_close = self._request(conn, keep_alive, False)
                self._record(True, body, started)
                reused = True
                if will_close or not keep_alive:
                    conn.close()
                    conn = None
            except _Idle:
                self._record(False, "closed-before-response", started,
                             getattr(conn, "client_port", None))
                conn.close()
                conn = None
            except Exception as exc:  # every failure counts; its kind is recorded
                self._record(False, _kind(exc), started, getattr(conn, "client_port", None))
                conn.close()
                conn = None

    def _connection(self, port: int) -> http.client.HTTPConnection:
        if self.ssl_context is not None:
            return http.client.HTTPSConnection(self.host, port, timeout=self.timeout,
                                               context=self.ssl_context)
        return http.client.HTTPConnection(self.host, port, timeout=self.timeout)

    def _request(self, conn: http.client.HTTPConnection, keep_alive: bool,
                 reused: bool) -> tuple[str, bool]:
        headers = {} if keep_alive else {"Connection": "close"}
        try:
            conn.request("GET", self.path, headers=headers)
            if conn.sock is not None:  # http.client closes it on a reset: note it now
                conn.client_port = conn.sock.getsockname()[1]
            resp = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if reused:
                raise _Idle() from None
            raise
        body = resp.read()
        if resp.status >= 500:
            raise RuntimeError(f"status {resp.status}")
        length = resp.getheader("Content-Length")
        if length is not None and int(length) != len(body):
            raise RuntimeError("truncated")
        return body.decode(errors="replace"), resp.will_close


def _kind(exc: Exception) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | http.client.RemoteDisconnected):
        return "reset"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timeout"
    if isinstance(exc, http.client.IncompleteRead):
        return "truncated"
    return str(exc)[:60] or type(exc).__name__
