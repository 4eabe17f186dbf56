"""The asgi worker (-k asgi): ASGI 3.0 apps on the event worker's loop.

Everything around the connections is the event worker's (accept flow control,
heartbeat tick, signals, drain on TERM, --max-requests, parent death); the
connections are ASGIProtocol (asgi_protocol.py), whose request cycles run as
tasks. Around the loop: the app's lifespan startup runs at boot, before the
--health-check GET (in-process, through the app) and before the worker reports
ready; a failed startup stops the boot with its one line. After the drain (every
connection closed, the app's remaining tasks given the rest of
--graceful-timeout), lifespan shutdown runs; a quick stop (INT, QUIT) skips it.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from polycorn.server.asgi.inprocess import probe
from polycorn.server.asgi.lifespan import Lifespan, LifespanFailed
from polycorn.server.exitcodes import WORKER_BOOT_ERROR
from polycorn.server.workers.asgi_protocol import ASGIProtocol
from polycorn.server.workers.base import log
from polycorn.server.workers.event import EventWorker
from polycorn.server.workers.event_context import ServingContext, uvloop

RETRY_AFTER = b"5"


class ASGIContext(ServingContext):
    """What every connection of one asgi worker shares, beyond the event worker's."""

    def __init__(self, worker: ASGIWorker, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(worker, loop, on_last_connection=worker._on_last_connection)
        cfg = worker.cfg
        self.handler = worker.handler
        self.root_path = str(getattr(cfg, "root_path", "") or "")
        self.disconnect_grace = float(getattr(cfg, "asgi_disconnect_grace_period", 3))
        self.websocket_max_size = int(getattr(cfg, "websocket_max_message_size", 16777216))
        self.state: dict[str, Any] | None = worker.lifespan.state
        self.tasks: set[asyncio.Task] = set()  # request tasks, background work included

    def app_for(self, target: bytes) -> Any:
        """The app, or a 503 for the health path while the node is out of rotation."""
        handler = self.handler
        return self.app if handler.app_for(target) is handler.app else drained_health


async def drained_health(scope: dict, receive: Any, send: Any) -> None:
    body = b"draining\n"
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"Content-Type", b"text/plain"),
                            (b"Content-Length", b"%d" % len(body)), (b"Retry-After", RETRY_AFTER)]})
    await send({"type": "http.response.body", "body": body})


def new_asgi_loop(choice: str) -> asyncio.AbstractEventLoop:
    """--asgi-loop: auto (uvloop when installed, as the event worker), asyncio, uvloop."""
    if choice == "uvloop":
        if uvloop is None:
            raise RuntimeError("--asgi-loop uvloop, but uvloop is not installed "
                               "(pip install 'polycorn[fast]')")
        return uvloop.new_event_loop()
    if choice == "asyncio" or os.environ.get("POLYCORN_LOOP", "").lower() == "asyncio":
        return asyncio.new_event_loop()
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


class ASGIWorker(EventWorker):
    protocol_class = ASGIProtocol

    def _before_ready(self) -> None:
        """Lifespan startup, then the health check through the app, on the serving loop."""
        try:
            self.loop = new_asgi_loop(str(getattr(self.cfg, "asgi_loop", "auto")))
        except RuntimeError as exc:
            self._fail(WORKER_BOOT_ERROR, str(exc))
        asyncio.set_event_loop(self.loop)  # for apps that ask for it outside a coroutine
        self.lifespan = Lifespan(self.app, str(getattr(self.cfg, "asgi_lifespan", "auto")))
        self._boot_beat = self.loop.call_soon(self._boot_heartbeat)
        try:
            self.loop.run_until_complete(self.lifespan.startup())
        except LifespanFailed as exc:
            self._fail(WORKER_BOOT_ERROR, str(exc))
        finally:
            self._boot_beat.cancel()
        path = getattr(self.cfg, "health_check", None)
        if path:
            builder = self.handler.environ_builder(("localhost", 80), "http")
            status, error = self.loop.run_until_complete(
                probe(self.app, builder, path, self.lifespan.state))
            if error is not None:
                log.error("health check GET %s: the application raised", path, exc_info=error)
            if not 200 <= status < 300:
                self._fail(WORKER_BOOT_ERROR, f"health check GET {path} answered {status}")

    def _boot_heartbeat(self) -> None:
        # A startup that warms caches or pools may take longer than --timeout; while
        # the loop turns, the worker is alive (a startup that blocks it is not).
        self.slots.heartbeat(self.slot)
        self._boot_beat = self.loop.call_later(self.select_timeout, self._boot_heartbeat)

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        return self.loop

    def _new_context(self, loop: asyncio.AbstractEventLoop) -> ServingContext:
        return ASGIContext(self, loop)

    def _on_last_connection(self) -> None:
        # Connections are all closed; the app's tasks (background work after a response)
        # get what is left of --graceful-timeout before the loop stops.
        if self._shutting_down:
            return
        if not self.ctx.tasks:
            self.loop.stop()
            return
        self.loop.create_task(self._wait_for_tasks())

    async def _wait_for_tasks(self) -> None:
        deadline = self._graceful_deadline or (time.monotonic() + float(self.cfg.graceful_timeout))
        while self.ctx.tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self.ctx.tasks), timeout=max(0.0, deadline - time.monotonic()))
        self.loop.stop()

    def _after_connections(self, loop: asyncio.AbstractEventLoop) -> None:
        tasks = [task for task in self.ctx.tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
        if self._exit_status is None:  # a quick stop (INT, QUIT, ABRT) skips shutdown
            loop.run_until_complete(self.lifespan.shutdown())
