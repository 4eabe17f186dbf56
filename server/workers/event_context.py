"""What every connection of one event worker shares: the app, the settings, the connection set.

Built once per worker after the app is loaded, so a request reads plain
attributes (a hook left at its default is None and costs one test). It also
owns accept flow control: past --worker-connections the listeners are closed in
this worker (the kernel queue, shared with the other workers, keeps the
clients waiting) and reopened from duplicates when connections end.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from polycorn.server import accel
from polycorn.server.http.connection import ServerConnection
from polycorn.server.workers import event_native
from polycorn.server.workers.base import RunState
from polycorn.server.wsgi.hooks import configured_hook

# Accepting resumes when connections fall this fraction below --worker-connections,
# so that a worker at its limit does not close and reopen its listeners on every request.
RESUME_FRACTION = 0.9
_RUNNING = RunState.RUNNING  # a module global: Enum class attributes are slow to read


# The `fast` extra, imported here, at module level: the master imports this module to
# know the worker class, so every worker shares these pages copy-on-write instead of
# importing (and paying for) them after the fork.
try:
    import uvloop
except ImportError:
    uvloop = None
try:
    from polycorn.server.http.fast import FastConnection
except ImportError:
    FastConnection = None
AccelConnection = None
if FastConnection is not None and accel.split_head is not None:
    from polycorn.server.http.accel_connection import AccelConnection


def choose_parser() -> type:
    """FastConnection (llhttp) when httptools is installed, unless POLYCORN_PARSER=python;
    with the compiled accelerator too (server/accel.py), AccelConnection."""
    if FastConnection is not None and os.environ.get("POLYCORN_PARSER", "").lower() != "python":
        return AccelConnection or FastConnection
    return ServerConnection


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (the `fast` extra), unless POLYCORN_LOOP=asyncio."""
    if uvloop is not None and os.environ.get("POLYCORN_LOOP", "").lower() != "asyncio":
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class ServingContext:
    def __init__(self, worker: Any, loop: asyncio.AbstractEventLoop,
                 on_last_connection: Callable[[], None]) -> None:
        cfg = worker.cfg
        handler = worker.handler  # the WSGIHandler the base built: limits, hooks, access log
        self.worker = worker
        self.loop = loop
        self.app = worker.app
        self.access_log = handler.access_log
        self.access_log_enabled = bool(handler.access_log.enabled)
        self.pre_request = configured_hook(cfg.pre_request)
        self.post_request = configured_hook(cfg.post_request)
        # Anything to record per request? If not, a request allocates nothing for it.
        self.observed = bool(self.access_log_enabled or self.pre_request or self.post_request)
        # The compiled app call and response (event_native.py), unless something per
        # request (the access log, a hook) needs the Python cycle's Trace.
        self.native_respond = None if self.observed else event_native.RESPOND
        self.limits = handler.limits
        self.keepalive = float(cfg.keepalive or 0)
        timeout = float(cfg.timeout or 0)
        # --timeout 0 means no limit in Gunicorn; a day is as good and keeps the sweep simple.
        self.request_timeout = timeout if timeout > 0 else 86400.0
        # os.sendfile through asyncio's own loop; uvloop has no sendfile (its responses
        # iterate the file wrapper instead, with the same backpressure as any body).
        # Not over TLS: the bytes must go through the TLS layer.
        self.sendfile_native = (handler.sendfile_enabled and worker.ssl_context is None
                                and isinstance(loop, asyncio.BaseEventLoop))
        self.ssl_handshake_timeout = float(getattr(cfg, "ssl_handshake_timeout", 5) or 5)
        self.tls = worker.ssl_context is not None
        self.parser = choose_parser()
        # The request cycle of plain requests in one compiled call per read
        # (event_native.py), with the compiled response only, on AccelConnection only.
        self.serve_plain = (event_native.SERVE_PLAIN if self.native_respond is not None
                            and AccelConnection is not None
                            and issubclass(self.parser, AccelConnection) else None)
        self.max_connections = int(getattr(cfg, "worker_connections", 1000) or 1000)
        self.connections: set[Any] = set()
        # TLS connections accepted whose handshake is not done (protocol -> deadline): a
        # drain waits for them, or a client mid-handshake at a HUP would be cut. A failed
        # handshake never reaches the protocol, so an entry also ends at its deadline.
        self.handshakes: dict[Any, float] = {}
        self.draining = False
        self._on_last_connection = on_last_connection
        self._servers: list[Any] = []  # asyncio Servers, while accepting
        # (listener, protocol factory, the SSLContext the listener handshakes with or None)
        self._factories: list[tuple[Any, Callable[[], Any], Any]] = []
        self._accepting = False

    def new_connection(self) -> Any:
        return self.parser(self.limits, keep_alive_allowed=self.keepalive > 0)

    # -- connections ---------------------------------------------------------------

    def handshake_started(self, protocol: Any) -> None:
        if len(self.handshakes) < self.max_connections:  # a flood of bad clients: no more
            self.handshakes[protocol] = time.monotonic() + self.ssl_handshake_timeout

    def connection_opened(self, protocol: Any) -> None:
        if self.handshakes:
            self.handshakes.pop(protocol, None)
        self.connections.add(protocol)
        if self.draining:
            protocol.drain()
        elif len(self.connections) >= self.max_connections and self._accepting:
            self.pause_accepting()

    def connection_closed(self, protocol: Any) -> None:
        self.connections.discard(protocol)
        if self.draining:
            if not self.connections and not self.handshakes:
                self._on_last_connection()
        elif (not self._accepting
              and len(self.connections) <= self.max_connections * RESUME_FRACTION):
            self.resume_accepting()

    def count_request(self) -> None:
        worker = self.worker
        worker.count_request()
        if worker.state is not _RUNNING:  # (serve_plain, accel_serve.c, takes these steps too)
            self.worker_stopping()

    def worker_stopping(self) -> None:
        """The worker left RUNNING (a signal, --max-requests): drain, once."""
        if not self.draining:
            self.begin_drain()

    def sweep(self, now: float) -> None:
        """End connections past their deadline (keep-alive, request and write timeouts)."""
        for protocol in list(self.connections):
            protocol.expire(now)
        if self.handshakes:
            for protocol, deadline in list(self.handshakes.items()):
                if deadline <= now:
                    del self.handshakes[protocol]
            if self.draining and not self.connections and not self.handshakes:
                self._on_last_connection()

    # -- accepting -----------------------------------------------------------------

    def add_listener(self, listener: Any, factory: Callable[[], Any], ssl: Any = None) -> None:
        self._factories.append((listener, factory, ssl))

    async def start_accepting(self) -> None:
        self._accepting = True
        # listen() runs again inside create_server: give it the configured backlog.
        backlog = int(getattr(self.worker.cfg, "backlog", 2048) or 2048)
        for listener, factory, ssl in self._factories:
            tls = {} if ssl is None else {"ssl": ssl,
                                          "ssl_handshake_timeout": self.ssl_handshake_timeout}
            # A duplicate, because closing a Server closes its socket: the listener itself
            # stays open, to be served again after a pause.
            sock = socket.socket(fileno=os.dup(listener.fileno()))
            sock.setblocking(False)
            if sock.family == socket.AF_UNIX:
                server = await self.loop.create_unix_server(factory, sock=sock, backlog=backlog,
                                                            **tls)
            else:
                server = await self.loop.create_server(factory, sock=sock, backlog=backlog, **tls)
            if not self._accepting:  # paused (or draining) while create_server yielded
                server.close()
                return
            self._servers.append(server)

    def pause_accepting(self) -> None:
        self._accepting = False
        servers, self._servers = self._servers, []
        if not servers:
            return
        if not isinstance(self.loop, asyncio.BaseEventLoop):  # uvloop attaches at accept
            _close_servers(servers)
            return
        # asyncio attaches a client to its Server a turn after accepting it (the accept's
        # second half is a task), and a Server closed in between fails the attach: the
        # client is closed unanswered (Server._attach asserts the Server is open; a TERM
        # read in the accept's turn lost such clients). So stop accepting now and close
        # two turns later, once every client already accepted is attached.
        for server in servers:
            for sock in server.sockets:
                self.loop.remove_reader(sock.fileno())
        self.loop.call_soon(self.loop.call_soon, _close_servers, servers)

    def resume_accepting(self) -> None:
        self._accepting = True  # set now: connection_closed must not schedule it twice
        self.loop.create_task(self.start_accepting())

    def begin_drain(self) -> None:
        """Stop accepting; close idle keep-alive connections; the rest answer with close."""
        if self.draining:
            return
        self.draining = True
        self.pause_accepting()
        for protocol in list(self.connections):
            protocol.drain()
        if not self.connections and not self.handshakes:
            self._on_last_connection()


def _close_servers(servers: list[Any]) -> None:
    for server in servers:
        server.close()
