"""cycleapp.py's ASGI twin, for the request-cycle policy's wire tests on -k asgi
(tests/server/test_policy_wire.py).

Same routes, same outcomes, said in ASGI: an iterable's close() is the end of the
app's sending (a finally around it notes "close PATH" to $CYCLE_NOTES, where
post_request and the access log also write, cycle_conf.py); "close-raises" raises
after its whole response went out; "short-file" declares 100000 bytes and sends
the 1000 of $CYCLE_SHORT_FILE (ASGI has no wsgi.file_wrapper: a short body).
"""

import asyncio
import os

NOTES = os.environ.get("CYCLE_NOTES", os.devnull)
SHORT_FILE = os.environ.get("CYCLE_SHORT_FILE", os.devnull)


def note(line):
    with open(NOTES, "a") as f:
        f.write(line + "\n")


async def respond(send, path, headers, chunks, *, fail_after=None, close_raises=False,
                  pause=0.0):
    """The head, then each chunk; the "close" note once sending ended, however it ended."""
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    try:
        for i, chunk in enumerate(chunks):
            if fail_after is not None and i == fail_after:
                raise RuntimeError("midway failure")
            if pause:
                await asyncio.sleep(pause)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        note(f"close {path}")
        if close_raises:
            raise RuntimeError("close failure")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    kind = path.split("/")[1]
    text = [(b"content-type", b"text/plain")]
    if kind == "error":
        raise RuntimeError("app failure before start_response")
    if kind == "ok":
        return await respond(send, path, [*text, (b"content-length", b"5")], [b"hello"])
    if kind == "midway":
        return await respond(send, path, text, [b"part one\n", b"part two\n"], fail_after=1)
    if kind == "stream":  # long enough that a client leaving is noticed mid-body
        return await respond(send, path, [(b"content-type", b"application/octet-stream")],
                             (b"x" * 65536 for _ in range(4000)), pause=0.001)
    if kind == "close-raises":
        return await respond(send, path, [*text, (b"content-length", b"5")], [b"hello"],
                             close_raises=True)
    if kind == "bad-header":  # a CR in a value: refused when the head is framed
        return await respond(send, path, [(b"x-split", b"a\r\nX-Injected: b"),
                                          (b"content-length", b"5")], [b"hello"])
    if kind == "short-file":
        with open(SHORT_FILE, "rb") as f:
            data = f.read()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", b"100000")]})
        await send({"type": "http.response.body", "body": data, "more_body": False})
        return
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
