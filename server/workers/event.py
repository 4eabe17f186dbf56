"""The event worker: one asyncio loop (uvloop when installed), many keep-alive connections.

The bjoern/meinheld model: each complete request is answered by calling the
WSGI app inline on the loop, which is right for fast apps; an app that blocks
(slow queries, sleeps, outbound calls) stalls every connection of the worker
and belongs on the `thread` worker. Connections are asyncio Protocols
(event_protocol.py); the heartbeat is a periodic loop callback, so it proves the
loop is not blocked. TERM drains: the listeners close, idle keep-alive
connections close, in-flight requests are answered with Connection: close.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from polycorn.server import accel
from polycorn.server.workers.base import RunState, Worker, log, where
from polycorn.server.workers.event_context import ServingContext, new_event_loop
from polycorn.server.workers.event_protocol import HTTPProtocol
from polycorn.server.workers.proxy_gate import ProxyGate
from polycorn.server.workers.proxy_gate_event import gated_factory


class EventWorker(Worker):
    protocol_class: Any = HTTPProtocol  # the asgi worker's subclass serves ASGI apps

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        return new_event_loop()

    def _new_context(self, loop: asyncio.AbstractEventLoop) -> ServingContext:
        return ServingContext(self, loop, on_last_connection=self._on_last_connection)

    def open_connections(self) -> int:
        ctx = getattr(self, "ctx", None)  # None until run() starts serving
        return len(ctx.connections) if ctx is not None else 0

    def run(self) -> None:
        # The asgi worker made its loop at boot (lifespan startup ran on it).
        self.loop = loop = getattr(self, "loop", None) or self._new_loop()
        self.ctx = self._new_context(loop)
        log.info("worker %s: request path %s, parser %s", self.pid, accel.describe(),
                 self.ctx.parser.__name__)
        self._shutting_down = False
        loop.set_exception_handler(self._on_loop_exception)
        self.proxy_gate = ProxyGate.from_config(self.cfg)
        self._graceful_deadline: float | None = None
        self._exit_status: int | None = None  # set by QUIT/INT (0) or ABRT (1): stop now
        tls = self.ssl_context
        for listener in self.listeners:
            builder = self.handler.environ_builder(listener.server_name(),
                                                   "https" if tls is not None else "http")
            # With a PROXY gate the header comes before the ClientHello: the gate starts TLS.
            self.ctx.add_listener(listener, self._factory(builder),
                                  ssl=tls if self.proxy_gate is None else None)
        self._install_loop_signals()
        loop.add_reader(self.parent_fd, self._on_parent_readable)
        try:
            # Clients queued on the shared listeners may be served within this call.
            loop.run_until_complete(self.ctx.start_accepting())
            self._tick()
            loop.run_forever()  # until the drain ends, or a quick stop
        finally:
            self._shutdown()
        if self._exit_status is not None:
            raise SystemExit(self._exit_status)

    def _factory(self, builder: Any) -> Any:
        ctx = self.ctx
        protocol_class = self.protocol_class

        if self.ssl_context is None:
            def protocol() -> HTTPProtocol:
                return protocol_class(ctx, builder)
            return gated_factory(self.proxy_gate, protocol)  # the PROXY header first, if on

        def tls_protocol() -> HTTPProtocol:
            # Made when the TLS handshake starts (at accept, or after the PROXY header).
            made = protocol_class(ctx, builder)
            ctx.handshake_started(made)
            return made
        return gated_factory(self.proxy_gate, tls_protocol,
                             (self.ssl_context, ctx.ssl_handshake_timeout))

    # -- the loop's own callbacks ------------------------------------------------------

    def _tick(self) -> None:
        """Heartbeat, deadlines and drain progress, every select_timeout seconds."""
        self.notify()
        now = time.monotonic()
        self.ctx.sweep(now)
        if self.state is not RunState.RUNNING:
            self._begin_drain()
            if self._graceful_deadline is not None and now > self._graceful_deadline:
                log.warning("worker %s: graceful timeout with %s connections open",
                            self.pid, len(self.ctx.connections))
                self.loop.stop()
                return
        self.loop.call_later(self.select_timeout, self._tick)

    def _on_loop_exception(self, loop: Any, context: dict) -> None:
        # asyncio's default handler logs to the "asyncio" logger, which --log-file and
        # --error-logfile do not cover: a failing callback must show in our error log.
        exc = context.get("exception")
        if isinstance(exc, SystemExit) and self._exit_status is not None:
            return  # our own quick stop, caught by uvloop inside a transport callback
        log.error("worker %s: %s", self.pid, context.get("message", "error in the event loop"),
                  exc_info=exc if isinstance(exc, BaseException) else None)

    # -- signals ------------------------------------------------------------------------

    def _install_loop_signals(self) -> None:
        """Signal handlers that reach the loop through a pipe of our own.

        uvloop takes the wakeup fd while it runs (so the base's signal pipe stays
        silent), and it turns an exception raised inside a transport callback into
        a transport error instead of a loop exit: so each handler acts on the state
        at once and then writes the pipe, which the loop reads on its next turn.
        """
        self._signal_r, self._signal_w = os.pipe()
        os.set_blocking(self._signal_w, False)
        signal.signal(signal.SIGTERM, self._on_term_signal)
        signal.signal(signal.SIGINT, self._on_quit_signal)
        signal.signal(signal.SIGQUIT, self._on_quit_signal)
        signal.signal(signal.SIGABRT, self._on_abort_signal)
        self.loop.add_reader(self._signal_r, self._on_signal_pipe)

    def _wake_loop(self) -> None:
        try:
            os.write(self._signal_w, b"!")
        except BlockingIOError:
            pass  # a byte is already waiting

    def _on_term_signal(self, signum: int, frame: Any) -> None:
        # The state changes at once, so a response being made now already says
        # Connection: close; the loop stops accepting when it reads the pipe.
        self.drain("TERM")
        self._wake_loop()

    def _on_quit_signal(self, signum: int, frame: Any) -> None:
        # INT/QUIT: quick stop (Gunicorn's meaning), without waiting for anything.
        self.state = RunState.STOPPED
        self.cfg.worker_int(self)
        self._stop_now(0)

    def _on_abort_signal(self, signum: int, frame: Any) -> None:
        # ABRT: the master saw no heartbeat within --timeout (an app call blocks the loop).
        log.error("worker %s aborted: no heartbeat within --timeout %ss; it was in %s",
                  os.getpid(), self.cfg.timeout, where(frame))
        self.state = RunState.STOPPED
        self.aborted = True
        self.cfg.worker_abort(self)
        self._stop_now(1)

    def _stop_now(self, status: int) -> None:
        self._exit_status = status
        self._wake_loop()
        # Also unwinds an app call that blocks the loop; if uvloop swallows it as a
        # transport error, the pipe still stops the loop.
        raise SystemExit(status)

    def _on_signal_pipe(self) -> None:
        try:
            os.read(self._signal_r, 512)
        except BlockingIOError:
            pass
        if self._exit_status is not None:
            self.loop.stop()
        elif self.state is not RunState.RUNNING:
            self._begin_drain()

    def _on_parent_readable(self) -> None:
        # EOF stays readable: stop watching, or the loop would spin on it.
        self.loop.remove_reader(self.parent_fd)
        self.check_wakeups({self.parent_fd})
        self._begin_drain()

    def _on_last_connection(self) -> None:
        if not self._shutting_down:  # _shutdown's own aborts must not stop its loop run
            self.loop.stop()

    def _begin_drain(self) -> None:
        if self._graceful_deadline is None:
            self._graceful_deadline = time.monotonic() + float(self.cfg.graceful_timeout)
            self.ctx.begin_drain()

    # -- after the loop -------------------------------------------------------------------

    def _shutdown(self) -> None:
        loop = self.loop
        if self._exit_status is None and self._graceful_deadline is not None:
            self._serve_late_accepts(loop)
        self._shutting_down = True
        self.ctx.pause_accepting()
        for protocol in list(self.ctx.connections):
            if protocol.transport is not None:
                protocol.transport.abort()
        # Let the transports' close callbacks run (connection_lost closes app iterables).
        loop.run_until_complete(_yield_to_loop())
        self._after_connections(loop)
        loop.close()

    def _serve_late_accepts(self, loop: asyncio.AbstractEventLoop) -> None:
        """Answer the clients accepted in the loop's last turn before they are aborted.

        The loop makes a client's protocol a turn after accepting it (asyncio runs the
        accept's second half as a task, then connection_made is call_soon; uvloop defers
        connection_made too). A drain begun in that same turn saw no connection and
        stopped the loop, and the client was reset with its request unanswered (the asgi
        worker's HUP under load: 1 reset in 849). Their protocols appear within a few
        turns; served like any connection of a drain, with Connection: close.
        """
        loop.run_until_complete(_yield_to_loop())
        if self.ctx.connections and time.monotonic() < self._graceful_deadline:
            log.info("worker %s: %s connections accepted as the drain began; answering them",
                     self.pid, len(self.ctx.connections))
            loop.run_forever()  # until the last one closes, or the tick's graceful deadline

    def _after_connections(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every connection is closed and the loop still open (the asgi worker's lifespan)."""


async def _yield_to_loop() -> None:
    for _ in range(3):
        await asyncio.sleep(0)
