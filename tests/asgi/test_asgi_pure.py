"""Pure parts of -k asgi: the app-shape decision and the scope (no sockets)."""

from __future__ import annotations

import functools

import pytest
from polycorn.server.asgi.scope import http_scope
from polycorn.server.asgi.shape import ASGI, UNKNOWN, WSGI, app_kind, mismatch
from polycorn.server.http.events import Request


def wsgi_function(environ, start_response):
    return []


async def asgi_function(scope, receive, send):
    pass


class WSGIClass:
    def __call__(self, environ, start_response):
        return []


class ASGIClass:
    async def __call__(self, scope, receive, send):
        pass


def test_frameworks_are_told_apart():
    import fastapi
    import flask
    import starlette.applications
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

    assert app_kind(flask.Flask("x")) == WSGI
    assert app_kind(fastapi.FastAPI()) == ASGI
    assert app_kind(starlette.applications.Starlette()) == ASGI
    assert app_kind(WSGIHandler.__new__(WSGIHandler)) == WSGI  # no settings needed
    assert app_kind(ASGIHandler.__new__(ASGIHandler)) == ASGI


@pytest.mark.parametrize("app,kind", [
    (wsgi_function, WSGI), (asgi_function, ASGI), (WSGIClass(), WSGI), (ASGIClass(), ASGI),
    (lambda *args: None, UNKNOWN),  # could be either: -k decides
    (functools.partial(asgi_function), ASGI),  # inspect sees through a partial
    (len, UNKNOWN),
])
def test_app_kind(app, kind):
    assert app_kind(app) == kind


def test_only_a_certain_mismatch_stops_the_boot():
    assert mismatch(wsgi_function, "m:app", "asgi").startswith("m:app is a WSGI application")
    assert "run it with -k asgi" in mismatch(asgi_function, "m:app", "thread")
    assert mismatch(lambda *a: None, "m:app", "asgi") is None
    assert mismatch(asgi_function, "m:app", "asgi") is None


def test_the_scope_of_an_absolute_form_target():
    request = Request(method=b"GET", target=b"http://h.example/a%20b/c?x=1", http_version=b"1.1",
                      headers=((b"host", b"h.example"),))
    environ = {"wsgi.url_scheme": "https", "REQUEST_METHOD": "GET", "SERVER_NAME": "10.0.0.1",
               "SERVER_PORT": "8000", "REMOTE_ADDR": "10.0.0.9", "REMOTE_PORT": "5555",
               "SCRIPT_NAME": ""}
    scope = http_scope(request, environ, "/api", {"db": 1})
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "/a b/c", b"/a%20b/c", b"x=1")
    assert (scope["scheme"], scope["server"], scope["client"]) == (
        "https", ("10.0.0.1", 8000), ("10.0.0.9", 5555))
    assert scope["root_path"] == "/api" and scope["state"] == {"db": 1}
    assert scope["headers"] == [(b"host", b"h.example")]
    ws = http_scope(request, environ, "", None, kind="websocket")
    assert ws["scheme"] == "wss" and "method" not in ws and ws["subprotocols"] == []
