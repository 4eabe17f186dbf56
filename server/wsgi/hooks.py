"""The `req` and `resp` objects that Gunicorn's pre_request and post_request hooks read.

Built only when such a hook is configured, so requests pay nothing otherwise.
They carry the attributes hooks written for Gunicorn use, as plain values.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from polycorn.server.config.hooks import is_default_hook
from polycorn.server.http.events import Request


def configured_hook(hook: Any) -> Any:
    """The hook if the operator set one, else None (unset or Polycorn's no-op default)."""
    if hook is None or is_default_hook(hook):
        return None
    return hook


class HookRequest:
    """Gunicorn's `req`: method, path, query, uri, version, headers (upper-case names)."""

    __slots__ = ("method", "uri", "path", "query", "version", "headers", "remote_addr")

    def __init__(self, request: Request, environ: dict[str, Any], client_addr: Any) -> None:
        self.method = environ["REQUEST_METHOD"]
        self.uri = environ["RAW_URI"]
        if self.uri.startswith("/"):
            path, _, self.query = self.uri.partition("?")
        else:  # absolute-form or "*": Gunicorn reports the URL's path
            parts = urlsplit(self.uri)
            path, self.query = parts.path, parts.query
        self.path = path
        major, _, minor = request.http_version.partition(b".")
        self.version = (int(major), int(minor or 0))
        self.headers = [(name.decode("latin-1").upper(), value.decode("latin-1"))
                        for name, value in request.headers]
        self.remote_addr = client_addr


class HookResponse:
    """Gunicorn's `resp` after the response: status, status_code, headers, sent (body bytes)."""

    __slots__ = ("status", "status_code", "headers", "sent")

    def __init__(self, status: str, headers: list[tuple[str, str]], sent: int) -> None:
        self.status = status
        self.status_code = int(status[:3])
        self.headers = headers
        self.sent = sent
