"""testapp.py's ASGI twin for -k asgi process tests: /pid, /version, /health, /sleep.

It has lifespan support (startup sets the state /health checks), like most
FastAPI and Starlette apps.
"""

import asyncio
import os
from pathlib import Path
from urllib.parse import parse_qs

_version_file = Path(__file__).with_name("VERSION")
VERSION = os.environ.get("APP_VERSION") or (
    _version_file.read_text().strip() if _version_file.exists() else "1")


async def _reply(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["ready"] = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/pid":
        return await _reply(send, 200, str(os.getpid()).encode())
    if path == "/version":
        return await _reply(send, 200, VERSION.encode())
    if path == "/health":
        ready = scope.get("state", {}).get("ready")
        return await _reply(send, 200 if ready else 503, b"health\n")
    if path == "/sleep":
        seconds = float(parse_qs(scope["query_string"].decode()).get("s", ["1"])[0])
        await asyncio.sleep(seconds)
        return await _reply(send, 200, b"slept %.2f" % seconds)
    return await _reply(send, 200, b"hello\n")
