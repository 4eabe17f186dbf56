"""The ASGI `http` and `websocket` scopes, made from the request and its WSGI environ.

The environ builder is the one judge of a request's names (the listener's or the
Host's server name, the trusted front end's scheme, refused or dropped header
names, --header-map): the
scope takes its answers from it, so -k asgi names a request exactly as -k event does.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import unquote

from polycorn.server.http.events import Request
from polycorn.server.http.grammar import absolute_form_re

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
_HTTP_VERSIONS = {b"1.1": "1.1", b"1.0": "1.0"}


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """(raw_path, query_string) of a request-target (origin or absolute form)."""
    if target[:1] != b"/":
        match = absolute_form_re.fullmatch(target)
        if match is not None:
            target = match[2] if match[2][:1] == b"/" else b"/" + match[2]
    path, _, query = target.partition(b"?")
    return path, query


def decode_path(raw_path: bytes) -> str:
    """The percent-decoded path as ASGI wants it (UTF-8, as uvicorn decodes it)."""
    text = raw_path.decode("latin-1")
    return unquote(text) if "%" in text else text


@functools.lru_cache(maxsize=1024)  # a client's connection asks for the same ones again
def _address(host: str, port: str) -> tuple[str, int | None]:
    return (host, int(port)) if port.isdigit() else (host, None)


def http_scope(request: Request, environ: dict[str, Any], root_path: str,
               state: dict[str, Any] | None, kind: str = "http",
               headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    """The scope of one request (`kind` "websocket" for an upgrade); `headers` are the
    request's as the environ builder lets them through (EnvironBuilder.scope_headers),
    all of them when not given."""
    target = request.target
    if target[:1] == b"/":  # origin-form, the common one
        raw_path, _, query = target.partition(b"?")
    else:
        raw_path, query = split_target(target)
    path = raw_path.decode("latin-1")
    if "%" in path:
        path = unquote(path)
    scheme = environ["wsgi.url_scheme"]
    if kind == "websocket":
        scheme = "wss" if scheme == "https" else "ws"
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": ASGI_VERSION,
        "http_version": _HTTP_VERSIONS.get(request.http_version, "1.1"),
        "method": environ["REQUEST_METHOD"],
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": root_path or environ.get("SCRIPT_NAME", ""),
        "headers": list(request.headers) if headers is None else headers,
        "client": _address(environ.get("REMOTE_ADDR", ""), environ.get("REMOTE_PORT", "")),
        "server": _address(environ["SERVER_NAME"], environ["SERVER_PORT"]),
    }
    if kind == "websocket":
        del scope["method"]
        protocols = environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL")
        scope["subprotocols"] = ([p.strip() for p in protocols.split(",") if p.strip()]
                                 if protocols else [])
    if state is not None:
        scope["state"] = state.copy()  # each request gets a shallow copy (ASGI lifespan)
    return scope
