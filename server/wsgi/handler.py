"""The WSGI side of a worker process: its app, settings and environ builders.

WSGIHandler is made once per worker (workers/base.py); it answers the health path
with 503 while the node is out of rotation and runs the in-process health check.
Each accepted socket is served by a ClientConnection (client.py), which takes the
handler for the app and the settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from polycorn.server.http.connection import Limits
from polycorn.server.http.events import Request
from polycorn.server.wsgi.body import WSGIInput
from polycorn.server.wsgi.client import ClientConnection
from polycorn.server.wsgi.environ import EnvironBuilder
from polycorn.server.wsgi.hooks import configured_hook
from polycorn.server.wsgi.run import check_chunk, run_app

# Kept importable from here: the workers' and benches' historical import path.
__all__ = ["ClientConnection", "WSGIHandler"]

log = logging.getLogger("polycorn.error")


class WSGIHandler:
    """One per worker process: the app, the settings and the per-listener environ builders."""

    def __init__(self, app: Callable, cfg: Any, worker: Any, access_log: Any | None) -> None:
        self.app = app
        self.cfg = cfg
        self.worker = worker
        self.access_log = access_log
        self.access_log_enabled = bool(access_log is not None and access_log.enabled)
        self.limits = Limits(
            max_request_line=cfg.limit_request_line,
            max_header_count=cfg.limit_request_fields,
            max_header_size=cfg.limit_request_field_size,
            permit_obsolete_folding=cfg.permit_obsolete_folding,
        )
        self.pre_request = configured_hook(cfg.pre_request)
        self.post_request = configured_hook(cfg.post_request)
        # Anything to record per request? If not, a request allocates nothing for it.
        self.observed = bool(self.access_log_enabled or self.pre_request or self.post_request)
        self.sendfile_enabled = bool(cfg.sendfile)
        self._builders: dict[tuple[Any, str], EnvironBuilder] = {}
        health = getattr(cfg, "health_check", None)
        # None never equals a request target: no cost when no health path is set.
        self._health_target = health.encode("latin-1") if health else None
        slots = getattr(worker, "slots", None)
        self._node_draining = slots.draining if slots is not None else lambda: False

    def environ_builder(self, server_addr: Any, scheme: str) -> EnvironBuilder:
        key = (server_addr, scheme)
        builder = self._builders.get(key)
        if builder is None:
            builder = self._builders[key] = EnvironBuilder(self.cfg, server_addr, scheme)
        return builder

    def app_for(self, target: bytes) -> Callable:
        """The app, or a 503 responder for the health path while the node is out of
        rotation (drained, or stopping on TERM).

        Load balancers that probe the health path take a drained node out of
        rotation, while the requests it still receives are served normally.
        """
        if target == self._health_target and self._node_draining():
            return _drained_health
        return self.app

    def health_check(self, path: str) -> int:
        """GET path from the app in-process (Host: localhost); the status code, 500 if it raised."""
        status, error = self.probe_health(path)
        if error is not None:
            log.error("health check GET %s: the application raised", path, exc_info=error)
        return status

    def probe_health(self, path: str) -> tuple[int, Exception | None]:
        """The health check's status code, and the exception when the app raised (500)."""
        request = Request(method=b"GET", target=path.encode("utf-8"), http_version=b"1.1",
                          headers=((b"host", b"localhost"),))
        builder = self.environ_builder(("localhost", 80), "http")
        environ = builder.build(request, ("127.0.0.1", 0), WSGIInput.from_bytes(b""))
        try:
            resp = run_app(self.app, environ)
            try:
                for chunk in resp.rest:
                    check_chunk(chunk)
            finally:
                resp.close()
        except Exception as exc:
            return 500, exc
        return resp.start.status_code, None


def _drained_health(environ: dict, start_response: Callable) -> list[bytes]:
    body = b"draining\n"
    start_response("503 Service Unavailable", [("Content-Type", "text/plain"),
                                               ("Content-Length", str(len(body))),
                                               ("Retry-After", "5")])
    return [body]
