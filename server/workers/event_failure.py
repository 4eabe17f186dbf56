"""How the event worker's connection ends badly: the app failed or exited, the client
broke HTTP/1.1, and the lingering close that follows when the client may still send.

A mixin of HTTPProtocol (event_protocol.py), apart from its request cycle: none of
this runs on a request that went well, and ASGIProtocol (asgi_protocol.py) shares
the refusal and the linger.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.workers.event_phase import _CLOSED, _LINGERING
from polycorn.server.wsgi import policy
from polycorn.server.wsgi.policy import LINGER_SECONDS, Failure
from polycorn.server.wsgi.trace import close_response, log_failure

log = logging.getLogger("polycorn.error")

_monotonic = time.monotonic
_LINGER = policy.End.LINGER


class FailureEndsMixin:
    """HTTPProtocol's failure ends (they use its ctx, conn, transport, phase and the
    request cycle's fields; _close and _release_body are HTTPProtocol's)."""

    __slots__ = ()
    ctx: Any
    conn: Any
    transport: Any
    phase: Any
    deadline: float
    client_addr: Any
    environ: dict
    resp: Any
    trace: Any
    request: Any
    served: int
    body_bytes: int

    def _app_exited(self, exc: SystemExit) -> bool:
        """The worker stops now (ABRT after --timeout, INT/QUIT) inside the app: answer
        500 and run post_request, as Gunicorn does, then go on exiting. An app's own
        sys.exit() is only an error (the worker lives on)."""
        self._app_failed(exc)
        if not self.ctx.worker.alive:
            raise exc
        return False

    def _app_failed(self, exc: BaseException) -> bool:
        """Answer an exception from the app or its response: 500 if nothing was sent yet."""
        environ = self.environ
        conn = self.conn
        closed = self.phase is _CLOSED
        verdict = policy.failure_verdict(Failure.CLIENT_GONE if closed else Failure.APP_ERROR,
                                        response_started=conn.response_started,
                                        client_may_send=not closed and policy.client_may_send(conn))
        log_failure(verdict.log_level, verdict.traceback, exc, self.client_addr, environ)
        resp = self.resp
        self.resp = None
        if resp is not None:
            close_response(resp, environ)
        trace = self.trace
        if verdict.answer is not None:
            self.transport.write(conn.error_response(verdict.answer))
            if trace is not None:
                # An error page is the server's, not the app's: 0 body bytes, as in Gunicorn.
                trace.log(policy.status_line(verdict.answer), policy.ERROR_HEADERS, 0)
        elif verdict.observed and trace is not None and resp is not None:
            start = resp.start
            head_only = environ["REQUEST_METHOD"] == "HEAD"
            trace.log(start.status, start.headers,
                      policy.sent_body_bytes(head_only, start.status_code, self.body_bytes))
        self.trace = None
        self.request = None
        self._release_body()
        self.served += 1
        self.ctx.count_request()
        if not closed:
            self._end_connection(verdict.end)
        return False

    def _refuse(self, exc: RemoteProtocolError) -> None:
        """The client broke HTTP/1.1: answer exc.status, then linger."""
        log.debug("bad request from %s: %s", self.client_addr, exc)
        self.request = None
        self._release_body()
        conn = self.conn
        # The request was not read to its end: the client may still be sending.
        may_send = policy.client_may_send(conn, body_unread=True)
        verdict = policy.failure_verdict(Failure.BAD_REQUEST, response_started=conn.response_started,
                                        client_may_send=may_send, status=exc.status,
                                        app_called=False)
        if verdict.answer is not None:
            self.transport.write(conn.error_response(verdict.answer, str(exc)))
        self._end_connection(verdict.end)

    def _end_connection(self, end: policy.End) -> None:
        """Close the connection as the policy said (never NEXT here)."""
        if end is _LINGER:
            self._linger()
        else:
            # CLOSE, or CUT: the transport still flushes what was written (a response
            # cut short stays cut short; the close is what tells the client).
            self._close()

    def _linger(self) -> None:
        transport = self.transport
        self.phase = _LINGERING
        self.deadline = _monotonic() + LINGER_SECONDS
        if self.conn.trailing_data[1]:
            self._close()  # the client closed its side already: nothing to wait for
        elif transport.can_write_eof():
            transport.write_eof()
            transport.resume_reading()
        else:
            self._close()
