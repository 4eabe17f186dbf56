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
import signal
import time
from typing import Any

from polycorn.server.workers.base import RunState, Worker, log
from polycorn.server.workers.event_context import ServingContext, new_event_loop
from polycorn.server.workers.event_protocol import HTTPProtocol


class EventWorker(Worker):
    def run(self) -> None:
        self.loop = loop = new_event_loop()
        self.ctx = ServingContext(self, loop, on_last_connection=loop.stop)
        self._graceful_deadline: float | None = None
        self._quit_requested = False
        for listener in self.listeners:
            builder = self.handler.environ_builder(listener.server_name(), "http")
            self.ctx.add_listener(listener, self._factory(builder))
        # Signals through the loop: uvloop takes the wakeup fd while it runs, so the base's
        # signal pipe would stay silent. ABRT keeps the base's handler: it must interrupt
        # an app call that blocks the loop (that is why the master sent it).
        loop.add_signal_handler(signal.SIGTERM, self._on_loop_term)
        loop.add_signal_handler(signal.SIGINT, self._on_loop_quit)
        loop.add_signal_handler(signal.SIGQUIT, self._on_loop_quit)
        loop.add_reader(self.parent_fd, self._on_parent_readable)
        try:
            loop.run_until_complete(self.ctx.start_accepting())
            self._tick()
            if self.state is RunState.RUNNING:
                loop.run_forever()
        finally:
            self._shutdown()
        if self._quit_requested:
            raise SystemExit(0)

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

    def _on_loop_term(self) -> None:
        self.drain("TERM")
        self._begin_drain()

    def _on_loop_quit(self) -> None:
        # INT/QUIT: quick stop, as the base's handler does, but from the loop.
        self.cfg.worker_int(self)
        self._quit_requested = True
        self.loop.stop()

    def _on_parent_readable(self) -> None:
        # EOF stays readable: stop watching, or the loop would spin on it.
        self.loop.remove_reader(self.parent_fd)
        self.check_wakeups({self.parent_fd})
        self._begin_drain()

    def _begin_drain(self) -> None:
        if self._graceful_deadline is None:
            self._graceful_deadline = time.monotonic() + float(self.cfg.graceful_timeout)
            self.ctx.begin_drain()

    # -- after the loop -------------------------------------------------------------------

    def _shutdown(self) -> None:
        loop = self.loop
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
