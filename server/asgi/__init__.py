"""ASGI 3.0 for the `asgi` worker: app shape, scopes, lifespan, in-process calls (stdlib only)."""
