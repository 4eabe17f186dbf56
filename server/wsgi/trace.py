"""The end of a request cycle that touches the app and the operator: close, log, hooks.

Every worker ends a cycle the same way (policy.py's order): close the app's
iterable, then the access log, then post_request. A Trace exists only when an
access log or a request hook is configured, so a plain request allocates nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from polycorn.server.http.events import Request
from polycorn.server.wsgi.hooks import HookRequest, HookResponse
from polycorn.server.wsgi.run import AppResponse

log = logging.getLogger("polycorn.error")


class Trace:
    """What the access log and the request hooks need of one request.

    `ctx` is what the worker shares between requests: access_log,
    access_log_enabled, pre_request, post_request and worker.
    """

    __slots__ = ("environ", "ctx", "started", "hook_request")

    def __init__(self, environ: dict, request: Request, client_addr: Any, ctx: Any) -> None:
        self.environ = environ
        self.ctx = ctx
        self.started = time.perf_counter()
        if ctx.access_log_enabled:
            ctx.access_log.started()  # requests in flight, for the instruments
        self.hook_request = (HookRequest(request, environ, client_addr)
                             if ctx.pre_request is not None or ctx.post_request is not None
                             else None)

    def log(self, status: str | None, headers: list, body_bytes: int) -> None:
        """The access log line, then post_request; nothing when nothing was answered."""
        if status is None:
            return
        ctx = self.ctx
        if ctx.access_log_enabled:
            ctx.access_log.log(self.environ, status, headers, body_bytes,
                               time.perf_counter() - self.started)
        if ctx.post_request is not None:
            try:
                ctx.post_request(ctx.worker, self.hook_request, self.environ,
                                 HookResponse(status, headers, body_bytes))
            except Exception:
                log.exception("post_request hook failed")


def close_response(resp: AppResponse, environ: dict) -> bool:
    """Call the app iterable's close() (PEP 3333); False, logged, if it raised."""
    try:
        if not resp.in_memory:  # an exact list or tuple has no close() to call
            resp.close()
    except Exception:
        # The response is on the wire already; a failing close() is still a bug to show.
        log.exception("error closing the response iterable of %s", environ.get("RAW_URI"))
        return False
    return True


def log_failure(level: int, with_traceback: bool, exc: BaseException | None, client_addr: Any,
                environ: dict) -> None:
    """One error-log line for a failed cycle, at the level the policy chose."""
    if with_traceback:
        log.log(level, "Error handling request %s %s", environ.get("REQUEST_METHOD"),
                environ.get("RAW_URI"), exc_info=exc)
    else:
        log.log(level, "request %s %s from %s ended: %r", environ.get("REQUEST_METHOD"),
                environ.get("RAW_URI"), client_addr, exc)
