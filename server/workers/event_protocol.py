"""One client connection of the event worker: an asyncio Protocol around a sans-IO connection.

data_received feeds the parser; each complete request (the body buffered whole,
spooled to a file past SPOOL_LIMIT) is answered inline by the WSGI app, and the
response goes out in as few transport writes as possible. Backpressure both
ways: while a response waits on a full write buffer the app's iterable is
suspended and reading is paused, so pipelined requests and uploads wait in the
kernel, not in our memory. Deadlines are plain numbers swept by the worker's tick.
The ends of a failed cycle are event_failure.py's, file bodies event_sendfile.py's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
import time
from typing import TYPE_CHECKING, Any

from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.events import NEED_DATA, Data, EndOfMessage, Request
from polycorn.server.workers.base import RunState
from polycorn.server.workers.event_failure import FailureEndsMixin
from polycorn.server.workers.event_native import DATA_RECEIVED, SPOOL_LIMIT, WRITEV_SIZE
from polycorn.server.workers.event_phase import (
    _CLOSED,
    _IDLE,
    _LINGERING,
    _READING,
    _SENDFILE,
    _WRITING,
    Phase,  # noqa: F401  (re-exported: asgi_cycle, asgi_protocol)
)
from polycorn.server.workers.event_sendfile import SendfileMixin
from polycorn.server.wsgi import policy
from polycorn.server.wsgi.body import EMPTY_INPUT, WSGIInput
from polycorn.server.wsgi.policy import JOIN_LIMIT, LINGER_BYTES, Failure
from polycorn.server.wsgi.response import StartResponse
from polycorn.server.wsgi.run import AppResponse, check_chunk, run_app
from polycorn.server.wsgi.trace import Trace, close_response

if TYPE_CHECKING:
    from polycorn.server.workers.event_context import ServingContext

log = logging.getLogger("polycorn.error")

_monotonic = time.monotonic
_END_OF_BODY = object()


_RUNNING = RunState.RUNNING


class HTTPProtocol(SendfileMixin, FailureEndsMixin, asyncio.Protocol):
    __slots__ = ("ctx", "builder", "conn", "transport", "client_addr", "phase", "deadline",
                 "served", "write_paused", "request", "body", "body_size", "spool", "resp",
                 "environ", "body_bytes", "trace", "lingered", "client_entries", "proxied")

    def __init__(self, ctx: ServingContext, builder: Any) -> None:
        self.ctx = ctx
        self.builder = builder  # the listener's EnvironBuilder
        self.conn = ctx.new_connection()
        self.transport: Any = None
        self.client_addr: Any = None
        self.phase = _IDLE
        self.deadline = 0.0
        self.served = 0  # responses completed on this connection
        self.write_paused = False
        self.request: Request | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        self.spool: Any = None  # the temp file of a large body
        self.resp: AppResponse | None = None  # the app's answer while it is being sent
        self.environ: dict = {}  # of the current request (for error logs)
        self.body_bytes = 0  # body bytes sent, unframed (the access log's %(B)s)
        self.trace: Trace | None = None  # only with an access log or request hooks
        self.lingered = 0
        self.client_entries: Any = None  # the environ entries its requests share
        self.proxied: Any = None  # a PROXY header read before TLS (proxy_gate_event.py)

    # -- asyncio callbacks ---------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.client_addr = transport.get_extra_info("peername")
        builder = self.builder
        # The local address only where it says more than the listener's (a wildcard).
        local_addr = transport.get_extra_info("sockname") if builder.wants_local_addr else None
        self.client_entries = builder.client_entries(self.client_addr, local_addr)
        if self.proxied is not None:
            self.client_entries = self.proxied.environ_entries(self.client_entries)
        ctx = self.ctx
        ctx.connection_opened(self)
        # A first request gets --timeout, as in the sync worker; --keep-alive is for later ones.
        self.deadline = _monotonic() + ctx.request_timeout

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase is _LINGERING:
            self.lingered += len(data)
            if self.lingered > LINGER_BYTES:
                self._close()
            return
        if phase is _CLOSED:
            return
        self.conn.receive_data(data)
        if phase is _READING or phase is _IDLE:
            self._process()

    # The Python data_received, which the compiled one (event_native.DATA_RECEIVED)
    # calls for every read it does not take: outside the reading and idle phases, or
    # with ctx.serve_plain off.
    _data_received = data_received
    if DATA_RECEIVED is not None:
        data_received = DATA_RECEIVED  # type: ignore[assignment]

    def eof_received(self) -> bool | None:
        if self.phase is _LINGERING:
            self._close()
            return None
        self.conn.receive_data(b"")
        if self.phase is _READING or self.phase is _IDLE:
            self._process()
        # Keep our side open: a response may still be on its way (RFC 9112 9.6 half-close).
        # Over TLS the TLS layer keeps it until its shutdown (True there only earns a
        # warning from asyncio and uvloop, once per connection).
        return None if self.ctx.tls else True

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.phase is _WRITING and self.resp is not None:
            self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        previous = self.phase
        self.phase = _CLOSED
        if previous is _WRITING or previous is _SENDFILE:
            # The client left mid-response: close the app's iterable all the same.
            self._finish_cycle(Failure.CLIENT_GONE)
        self._release_body()
        self.ctx.connection_closed(self)

    # -- the request cycle -----------------------------------------------------------

    def _process(self) -> None:
        """Turn buffered bytes into requests and answer them until more bytes are needed."""
        conn = self.conn
        next_event = conn.next_event
        ctx = self.ctx
        serve = ctx.serve_plain
        keys = self.builder.plain_keys
        if keys is None:
            serve = None
        while True:
            if serve is not None and self.request is None:
                # Whole plain requests (their Content-Length bodies all received) taken,
                # answered and their cycles ended in one compiled call, as the code below
                # and _respond do (event_native.py): False when it has gone idle or the
                # connection is done with for now, None when the buffer does not start
                # with one (the events below take it, and each thing after it).
                if serve(self, conn, ctx, ctx.app, ctx.worker, self.client_entries,
                         *keys) is False:
                    return
            try:
                event = next_event()
            except RemoteProtocolError as exc:
                self._refuse(exc)
                return
            kind = event.__class__
            if kind is Request:
                try:  # built now: a request Gunicorn refuses is refused before its body
                    self.environ = self.builder.build(event, self.client_addr, EMPTY_INPUT,
                                                      self.client_entries)
                except RemoteProtocolError as exc:
                    self._refuse(exc)
                    return
                self.phase = _READING
                self.request = event
                if event.expect_continue:
                    # The whole body is read before the app runs, so ask for it at once
                    # (RFC 9110 10.1.1: a server may send 100 as soon as it decides to read).
                    self.transport.write(conn.continue_bytes())
            elif kind is Data:
                self._add_body(event.data)
            elif kind is EndOfMessage:
                if not self._respond():
                    return
            elif event is NEED_DATA:
                if self.request is None and self.served and not conn.trailing_data[0]:
                    self.phase = _IDLE
                    self.deadline = _monotonic() + self.ctx.keepalive
                else:
                    self.phase = _READING
                    self.deadline = _monotonic() + self.ctx.request_timeout
                return
            else:  # ConnectionClosed: the client closed between requests
                self._close()
                return

    def _add_body(self, data: bytes) -> None:
        self.body_size += len(data)
        if self.spool is not None:
            self.spool.write(data)
            return
        self.body.append(data)
        if self.body_size > SPOOL_LIMIT:
            self.spool = tempfile.TemporaryFile()
            self.spool.writelines(self.body)
            self.body = []

    def _wsgi_input(self) -> WSGIInput:
        spool = self.spool
        if spool is None:
            body = self.body
            return WSGIInput.from_bytes(body[0] if len(body) == 1 else b"".join(body))
        spool.seek(0)
        return WSGIInput(lambda: spool.read(65536))

    def _respond(self) -> bool:
        """Call the app for the request just completed; True when the next cycle has begun."""
        ctx = self.ctx
        request = self.request
        assert request is not None
        environ = self.environ
        if self.body_size or self.spool is not None:
            environ["wsgi.input"] = self._wsgi_input()
        self.body_bytes = 0
        if ctx.observed:
            self.trace = Trace(environ, request, self.client_addr, ctx)
        conn = self.conn
        try:
            native = ctx.native_respond  # None when observed (see ServingContext)
            if native is None:
                if ctx.pre_request is not None:
                    ctx.pre_request(ctx.worker, self.trace.hook_request)
                resp = run_app(ctx.app, environ, StartResponse())
            else:
                # The compiled app call: the whole response's bytes for the common
                # answer (event_native.py), (head, body) for a large body, else the
                # AppResponse to send in Python.
                resp = native(ctx.app, environ, conn, ctx.worker)
            kind = resp.__class__
            if kind is bytes:
                self.transport.write(resp)
            elif kind is tuple:
                self.transport.writelines(resp)  # no copy of a large body (writev)
            else:
                return self._answer(resp)
        except Exception as exc:
            return self._app_failed(exc)
        except SystemExit as exc:
            return self._app_exited(exc)
        return self._finish_cycle()

    def _answer(self, resp: AppResponse) -> bool:
        """Send the app's answer that is not the whole response's bytes already; True when
        the next cycle has begun."""
        try:
            self.resp = resp
            conn = self.conn
            if self.ctx.worker.state is not _RUNNING:
                conn.refuse_keep_alive()  # a drain began during the app call: say so now
            if resp.file is not None and self._can_sendfile(resp, self.request):
                return self._start_sendfile(resp)
            if not resp.in_memory:
                first = resp.first
                self.body_bytes = len(first)
                start = resp.start
                head = conn.start_response(start.status_code, start.reason,
                                           start.wire_headers)
                self.transport.write(head + conn.send_body(first) if first else head)
                return self._pump()
            self._send_ready(resp)
        except Exception as exc:
            return self._app_failed(exc)
        except SystemExit as exc:
            return self._app_exited(exc)
        return self._finish_cycle()

    def _send_ready(self, resp: AppResponse) -> None:
        """A list or tuple body, every chunk of it in hand."""
        conn = self.conn
        start = resp.start
        first = resp.first
        self.body_bytes = len(first)
        second = next(resp.rest, _END_OF_BODY)
        if second is _END_OF_BODY and len(first) <= WRITEV_SIZE:
            # The common answer, a small one-chunk body: framed in one call, one write.
            self.transport.write(conn.respond_whole(
                start.status_code, start.reason, start.wire_headers, first))
            return
        head = conn.start_response(start.status_code, start.reason, start.wire_headers)
        body = conn.send_body(first)
        if second is _END_OF_BODY:  # a large one-chunk body: not copied (writev)
            self.transport.writelines((head, body, conn.end_response()))
        else:
            self._write_ready_body(head, body, second, resp)

    def _write_ready_body(self, head: bytes, first: bytes, second: Any, resp: AppResponse) -> None:
        """A list or tuple body: every chunk exists, so they go out together (one send)."""
        conn = self.conn
        parts = [head, first]
        size = len(first)
        write = self.transport.write
        for chunk in itertools.chain((second,), resp.rest):
            if check_chunk(chunk):
                framed = conn.send_body(chunk)
                self.body_bytes += len(chunk)
                if size + len(framed) > JOIN_LIMIT:
                    write(b"".join(parts))
                    parts, size = [], 0
                parts.append(framed)
                size += len(framed)
        parts.append(conn.end_response())
        if size > WRITEV_SIZE:
            self.transport.writelines(parts)  # no copy of a large body (writev with uvloop)
        else:
            write(b"".join(parts))

    def _pump(self) -> bool:
        """Stream the rest of the app's iterable until done or the write buffer is full."""
        resp = self.resp
        assert resp is not None
        conn = self.conn
        transport = self.transport
        write = transport.write
        try:
            for chunk in resp.rest:
                if check_chunk(chunk):
                    write(conn.send_body(chunk))
                    self.body_bytes += len(chunk)
                    if self.write_paused or transport.is_closing():
                        # A full buffer (or a client gone: the transport drops what we
                        # write): stop iterating until resume_writing or connection_lost.
                        self._suspend()
                        return False
            tail = conn.end_response()
            if tail:
                write(tail)
        except Exception as exc:
            return self._app_failed(exc)
        except SystemExit as exc:
            return self._app_exited(exc)
        if self.phase is _WRITING:
            # Resumed by resume_writing: carry on with pipelined requests, if any.
            if self._finish_cycle():
                self.transport.resume_reading()
                self._process()
            return False
        return self._finish_cycle()

    def _suspend(self) -> None:
        self.phase = _WRITING
        self.deadline = _monotonic() + self.ctx.request_timeout  # a client that never reads
        self.transport.pause_reading()

    # -- ends of a cycle ----------------------------------------------------------------

    def _finish_cycle(self, failure: Failure | None = None) -> bool:
        """Close the app's iterable, log, count; True if the next request cycle has begun.

        `failure` is how a response that went out ended badly (policy.py's table).
        """
        resp = self.resp
        self.resp = None
        self.request = None
        if self.body_size:
            self._release_body()
        if resp is not None:
            # An exact list or tuple has no close() to call: not even a call to skip it.
            if not resp.in_memory and not close_response(resp, self.environ) and failure is None:
                failure = Failure.CLOSE_FAILED
            trace = self.trace
            if trace is not None:
                start = resp.start
                sent = self.body_bytes
                # policy.sent_body_bytes inlined (this runs on every observed request).
                if sent and (start.status_code in (204, 304)
                             or trace.environ["REQUEST_METHOD"] == "HEAD"):
                    sent = 0
                trace.log(start.status, start.headers, sent)
                self.trace = None
        self.served += 1
        self.ctx.count_request()
        if self.phase is _CLOSED:
            return False
        conn = self.conn
        if failure is None:
            # policy.end_after_response's first row inlined (this runs on every request).
            if conn.keep_alive:
                conn.start_next_cycle()
                self.phase = _READING
                return True
            self._end_without_keep_alive()
            return False
        end = policy.failure_verdict(failure, response_started=True,
                                    client_may_send=policy.client_may_send(conn)).end
        self._end_connection(end)
        return False

    def _end_without_keep_alive(self) -> None:
        # policy.end_after_response's other rows (every Connection: close response runs
        # them): linger only while the client may still be sending, else close.
        pending, eof = self.conn.trailing_data
        if pending and not eof:
            self._linger()
        else:
            self._close()

    def _close(self) -> None:
        if self.phase is not _CLOSED:
            self.phase = _CLOSED
            self.transport.close()

    def _release_body(self) -> None:
        """Forget the request body (in memory or spooled): an idle connection holds none."""
        if self.body_size:
            self.body = []
            self.body_size = 0
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    # -- called by the worker ---------------------------------------------------------------

    def expire(self, now: float) -> None:
        """The worker's sweep: end a connection past its deadline."""
        phase = self.phase
        if now < self.deadline or phase is _CLOSED:
            return
        if phase is _WRITING or phase is _SENDFILE:
            log.debug("client %s stopped reading its response; closing", self.client_addr)
            self.transport.abort()
            return
        if phase is _READING:
            # A request that stopped arriving: a client leaving, as in the sync worker.
            log.debug("request from %s timed out", self.client_addr)
        self._close()

    def drain(self) -> None:
        """Graceful stop: close if idle between requests, else answer the current one with close."""
        self.conn.refuse_keep_alive()
        if self.phase is _IDLE and self.served:
            self._close()

