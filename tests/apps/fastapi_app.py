"""A FastAPI app for the asgi worker's tests: JSON, streaming, uploads read in chunks,
a background task, lifespan state, a body it never reads, and (with wsproto) WebSockets.

One worker per test server, so the module-level PROGRESS is the worker's: a test
reads it through /progress on another connection while a first one is stalled.
"""

import asyncio
import os
from contextlib import asynccontextmanager

from fastapi import BackgroundTasks, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

MARKS = os.environ.get("ASGI_MARKS", os.devnull)  # a file the app appends events to
PROGRESS = {"produced": 0, "disconnected": 0, "chunks": 0, "largest_chunk": 0}


def mark(text: str) -> None:
    with open(MARKS, "a") as f:
        f.write(text + "\n")


@asynccontextmanager
async def lifespan(app: FastAPI):
    if os.environ.get("ASGI_FAIL_STARTUP"):
        raise RuntimeError("the database is unreachable")
    mark("startup")
    yield {"started_by": os.getpid(), "greeting": "hello from lifespan"}
    mark("shutdown")


app = FastAPI(lifespan=lifespan)
ROOMS: set = set()


@app.get("/json")
async def as_json(request: Request) -> dict:
    return {"app": "fastapi", "pid": os.getpid(), "args": dict(request.query_params)}


@app.get("/state")
async def state(request: Request) -> dict:
    return {"started_by": request.state.started_by, "greeting": request.state.greeting}


@app.get("/version")
async def version() -> PlainTextResponse:
    # Which node answered, for the tests behind the HAProxy front (frontsupport.py).
    return PlainTextResponse(os.environ.get("APP_VERSION", "1"))


@app.get("/health")
async def health(request: Request) -> PlainTextResponse:
    # 2xx only once lifespan startup ran: --health-check proves the order.
    ok = getattr(request.state, "greeting", None) is not None
    return PlainTextResponse("ok" if ok else "no state", status_code=200 if ok else 500)


@app.get("/stream")
async def stream(n: int = 5, size: int = 0, delay: float = 0.0) -> StreamingResponse:
    async def parts():
        for i in range(n):
            chunk = (b"x" * size) if size else f"part {i}\n".encode()
            PROGRESS["produced"] += len(chunk)
            yield chunk
            if delay:
                await asyncio.sleep(delay)
    return StreamingResponse(parts(), media_type="text/plain")


@app.get("/progress")
async def progress() -> dict:
    return PROGRESS


@app.post("/reset")
async def reset() -> dict:
    PROGRESS.update(produced=0, disconnected=0, chunks=0, largest_chunk=0)
    return PROGRESS


@app.post("/upload")
async def upload(request: Request) -> dict:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        PROGRESS["chunks"] += 1
        PROGRESS["largest_chunk"] = max(PROGRESS["largest_chunk"], len(chunk))
    return {"received": total}


@app.post("/ignore")
async def ignore() -> PlainTextResponse:
    return PlainTextResponse("not read")


@app.post("/background")
async def background(tasks: BackgroundTasks) -> PlainTextResponse:
    async def later() -> None:
        await asyncio.sleep(0.3)
        mark("background done")
    tasks.add_task(later)
    return PlainTextResponse("accepted", status_code=202)


@app.get("/wait-disconnect")
async def wait_disconnect(request: Request) -> PlainTextResponse:
    while not await request.is_disconnected():
        await asyncio.sleep(0.05)
    PROGRESS["disconnected"] += 1
    mark("disconnected")
    return PlainTextResponse("gone")


@app.get("/boom")
async def boom() -> None:
    raise ValueError("boom")


@app.websocket("/ws")
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await ws.send_text(message["text"])
            else:
                await ws.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


@app.websocket("/room")
async def room(ws: WebSocket) -> None:
    await ws.accept()
    ROOMS.add(ws)
    try:
        while True:
            text = await ws.receive_text()
            for peer in list(ROOMS):
                await peer.send_text(text)
    except WebSocketDisconnect:
        pass
    finally:
        ROOMS.discard(ws)


@app.exception_handler(KeyError)
async def missing(request: Request, exc: KeyError) -> JSONResponse:
    return JSONResponse({"missing": str(exc)}, status_code=404)
