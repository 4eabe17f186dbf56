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

from polycorn.server.workers.base import RunState, Worker, log
from polycorn.server.workers.event_context import ServingContext, new_event_loop
from polycorn.server.workers.event_protocol import HTTPProtocol


class EventWorker(Worker):
    def run(self) -> None:
        self.loop = loop = new_event_loop()
        self.ctx = ServingContext(self, loop, on_last_connection=self._on_last_connection)
        self._shutting_down = False
        loop.set_exception_handler(self._on_loop_exception)
        self._graceful_deadline: float | None = None
        for listener in self.listeners:
            builder = self.handler.environ_builder(listener.server_name(), "http")
            self.ctx.add_listener(listener, self._factory(builder))
        # uvloop takes the wakeup fd while it runs, so the base's signal pipe would stay
        # silent: TERM schedules the drain on the loop itself. The other signals keep the
        # base's handlers, which act at once, even inside an app call that blocks the loop.
        self._drain_r, self._drain_w = os.pipe()
        os.set_blocking(self._drain_w, False)
        signal.signal(signal.SIGTERM, self._on_term_signal)
        loop.add_reader(self._drain_r, self._on_drain_requested)
        loop.add_reader(self.parent_fd, self._on_parent_readable)
        try:
            # Clients queued on the shared listeners may be served within this call.
            loop.run_until_complete(self.ctx.start_accepting())
            self._tick()
            loop.run_forever()  # until the drain ends (or QUIT/INT raise SystemExit)
        finally:
            self._shutdown()

    def _factory(self, builder: Any) -> Any:
        ctx = self.ctx

        def protocol() -> HTTPProtocol:
            return HTTPProtocol(ctx, builder)
        return protocol

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
        log.error("worker %s: %s", self.pid, context.get("message", "error in the event loop"),
                  exc_info=exc if isinstance(exc, BaseException) else None)

    def _on_term_signal(self, signum: int, frame: Any) -> None:
        # The state changes at once, so a response being made now already says
        # Connection: close; the loop stops accepting when it reads the pipe.
        self.drain("TERM")
        try:
            os.write(self._drain_w, b"!")
        except BlockingIOError:
            pass  # a byte is already waiting

    def _on_drain_requested(self) -> None:
        self.loop.remove_reader(self._drain_r)
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
        self._shutting_down = True
        self.ctx.pause_accepting()
        for protocol in list(self.ctx.connections):
            if protocol.transport is not None:
                protocol.transport.abort()
        # Let the transports' close callbacks run (connection_lost closes app iterables).
        loop.run_until_complete(_yield_to_loop())
        loop.close()


async def _yield_to_loop() -> None:
    for _ in range(3):
        await asyncio.sleep(0)
