"""The ASGI lifespan protocol: startup before a worker serves, shutdown after it drained.

--asgi-lifespan auto runs it and takes an app that raises at once (or never
answers lifespan) as one without lifespan support; `on` requires it, so such an
app stops the boot; `off` skips it. A `lifespan.startup.failed` always stops the
boot, with the app's message. `state` is the dict every request scope gets a
shallow copy of (the ASGI lifespan state extension).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("polycorn.error")

STARTUP_TIMEOUT = 60.0  # seconds; the master's --timeout heartbeat is kept meanwhile
SHUTDOWN_TIMEOUT = 30.0


class LifespanFailed(Exception):
    """Startup failed: the message is the one line the boot stops with."""


class Lifespan:
    def __init__(self, app: Any, mode: str) -> None:
        self.app = app
        self.mode = mode  # auto, on, off
        self.state: dict[str, Any] = {}
        self.supported = False
        self._messages: asyncio.Queue[dict] = asyncio.Queue()
        self._started: asyncio.Future | None = None
        self._stopped: asyncio.Future | None = None
        self._task: asyncio.Task | None = None

    async def startup(self) -> None:
        """Run lifespan.startup; raises LifespanFailed with the reason to stop the boot."""
        if self.mode == "off":
            return
        loop = asyncio.get_running_loop()
        self._started = loop.create_future()
        self._stopped = loop.create_future()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        self._messages.put_nowait({"type": "lifespan.startup"})
        self._task = loop.create_task(self._run(scope))
        try:
            outcome = await asyncio.wait_for(asyncio.shield(self._started), STARTUP_TIMEOUT)
        except TimeoutError:
            raise LifespanFailed(f"lifespan startup did not complete in {STARTUP_TIMEOUT:.0f}s") \
                from None
        kind, message = outcome
        if kind == "complete":
            self.supported = True
            return
        if kind == "failed":
            raise LifespanFailed(f"lifespan startup failed: {message or 'no message'}")
        # The app raised or returned before answering startup: no lifespan support.
        if self.mode == "on":
            raise LifespanFailed(f"--asgi-lifespan on, but the app does not support lifespan "
                                 f"({message})")
        log.debug("lifespan not supported by the app (%s); --asgi-lifespan auto goes on", message)

    async def shutdown(self) -> None:
        """Run lifespan.shutdown (if startup completed); errors are logged, never raised."""
        if not self.supported or self._task is None or self._task.done():
            return
        self.supported = False
        self._messages.put_nowait({"type": "lifespan.shutdown"})
        try:
            kind, message = await asyncio.wait_for(asyncio.shield(self._stopped),
                                                   SHUTDOWN_TIMEOUT)
        except TimeoutError:
            log.warning("lifespan shutdown did not complete in %.0fs", SHUTDOWN_TIMEOUT)
            self._task.cancel()
            return
        if kind != "complete":
            log.error("lifespan shutdown failed: %s", message or "no message")

    async def _run(self, scope: dict) -> None:
        try:
            await self.app(scope, self._receive, self._send)
            why = "the app returned"
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # an app without lifespan raises on the unknown scope
            why = f"the app raised {exc!r}"
            if self.supported:
                log.error("lifespan task of the app raised", exc_info=exc)
        for future in (self._started, self._stopped):
            if future is not None and not future.done():
                future.set_result(("unsupported" if future is self._started else "failed", why))

    async def _receive(self) -> dict:
        return await self._messages.get()

    async def _send(self, message: dict) -> None:
        kind = message.get("type")
        future = self._started if kind and kind.startswith("lifespan.startup.") else self._stopped
        if future is None or future.done():
            return
        if kind in ("lifespan.startup.complete", "lifespan.shutdown.complete"):
            future.set_result(("complete", ""))
        elif kind in ("lifespan.startup.failed", "lifespan.shutdown.failed"):
            future.set_result(("failed", str(message.get("message", ""))))
