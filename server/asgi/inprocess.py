"""An ASGI app called in-process, without a socket: the --health-check GET at boot."""

from __future__ import annotations

import asyncio
from typing import Any

from polycorn.server.asgi.scope import http_scope
from polycorn.server.http.events import Request
from polycorn.server.wsgi.body import WSGIInput

HEALTH_TIMEOUT = 30.0


async def probe(app: Any, builder: Any, path: str, state: dict | None) -> tuple[int, Exception | None]:
    """GET path (Host: localhost) from the app: its status code, 500 and the error if it raised."""
    request = Request(method=b"GET", target=path.encode("utf-8"), http_version=b"1.1",
                      headers=((b"host", b"localhost"),))
    environ = builder.build(request, ("127.0.0.1", 0), WSGIInput.from_bytes(b""))
    scope = http_scope(request, environ, "", state)
    status = 0
    done = asyncio.get_running_loop().create_future()
    asked = False

    async def receive() -> dict:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done  # then the client "goes away" once the response is over
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            if not done.done():
                done.set_result(None)

    task = asyncio.ensure_future(app(scope, receive, send))
    try:
        await asyncio.wait_for(_first(task, done), HEALTH_TIMEOUT)
        if task.done() and task.exception() is not None:
            raise task.exception()
    except Exception as exc:
        task.cancel()
        return 500, exc
    # A task still running (a background task after the response) runs on in the loop.
    return (status or 500), None


async def _first(task: asyncio.Future, done: asyncio.Future) -> None:
    await asyncio.wait([task, done], return_when=asyncio.FIRST_COMPLETED)
