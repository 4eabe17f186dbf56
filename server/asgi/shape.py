"""Is the app an ASGI or a WSGI callable? Asked once at boot, to refuse a mismatch clearly.

An ASGI app under a WSGI worker boots and answers every request with a 500; a WSGI
app under -k asgi never answers at all. Either stops the boot with one line that
names the worker class to use. Certain answers only: a coroutine function (the app
or its __call__) is ASGI; a plain callable that cannot take ASGI's three arguments
(scope, receive, send) but takes WSGI's two is WSGI. Anything else (a C callable,
*args, a sync callable returning an awaitable) is undecidable, and -k is trusted.
"""

from __future__ import annotations

import inspect
from typing import Any

ASGI, WSGI, UNKNOWN = "asgi", "wsgi", "unknown"


def _target(app: Any) -> Any:
    """The function that runs when the app is called (a class instance's __call__)."""
    if inspect.isfunction(app) or inspect.ismethod(app):
        return app
    call = type(app).__dict__.get("__call__") or next(
        (k.__dict__["__call__"] for k in type(app).__mro__ if "__call__" in k.__dict__), None)
    if call is not None and inspect.isfunction(call):
        return call.__get__(app)  # bound: its signature is without self
    return app


def app_kind(app: Any) -> str:
    """ASGI, WSGI or UNKNOWN, by the callable's own declaration (never by calling it)."""
    target = _target(app)
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(app):
        return ASGI
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return UNKNOWN
    takes = [p for p in signature.parameters.values()
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
        return UNKNOWN
    required = [p for p in takes if p.default is p.empty]
    if len(required) <= 2 <= len(takes) and len(takes) < 3:
        return WSGI
    return UNKNOWN


def mismatch(app: Any, spec: str | None, worker: str) -> str | None:
    """The one line that stops the boot when the app does not fit the worker, else None."""
    kind = app_kind(app)
    name = spec or "the application"
    if worker == "asgi" and kind == WSGI:
        return (f"{name} is a WSGI application and -k asgi serves ASGI apps: "
                f"run it with -k event (or sync, thread)")
    if worker != "asgi" and kind == ASGI:
        return f"{name} is an ASGI application and -k {worker} serves WSGI apps: run it with -k asgi"
    return None
