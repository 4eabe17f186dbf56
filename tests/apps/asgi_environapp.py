"""environapp.py's ASGI twin: the scope entries a front end can influence, as JSON.

Used to compare Polycorn's -k asgi with Gunicorn 27's on the same requests
(tests/server/test_forwarded.py): the header names with "_" reach the scope or not
by --header-map and --forwarder-headers, as they reach a WSGI environ or not.
"""

import json

SKIP = (b"host", b"connection")  # every request's own, not a front end's


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    answer = {
        "client": scope["client"][0],
        "scheme": scope["scheme"],
        "root_path": scope["root_path"],
        "path": scope["path"],
        "headers": [[name.decode("latin-1"), value.decode("latin-1")]
                    for name, value in scope["headers"] if name not in SKIP],
    }
    body = json.dumps(answer, sort_keys=True).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
