"""One client connection of the asgi worker: HTTP/1.1 cycles run as ASGI app tasks.

The event worker's protocol (event_protocol.py) supplies the connection's ends
(refuse, linger, close, drain); this class replaces the request cycle. The app
runs as a task per request; its body is parsed only when it calls receive(), so
an upload waits in the kernel until the app asks (reading pauses once HIGH_WATER
bytes wait unasked); send() awaits the transport's drain when the client reads
slowly. The response's end (keep-alive, drain of an unread body, linger, cut) is
policy.py's, as in every other worker. A client that leaves gets http.disconnect,
and --asgi-disconnect-grace-period seconds later its task is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from polycorn.server.asgi.scope import http_scope
from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.events import NEED_DATA, Data, EndOfMessage, Request
from polycorn.server.workers import asgi_websocket
from polycorn.server.workers.asgi_cycle import Cycle
from polycorn.server.workers.event_protocol import HTTPProtocol, Phase
from polycorn.server.wsgi import policy
from polycorn.server.wsgi.body import EMPTY_INPUT
from polycorn.server.wsgi.policy import DRAIN_LIMIT, LINGER_BYTES, Failure
from polycorn.server.wsgi.trace import Trace, log_failure

if TYPE_CHECKING:
    from polycorn.server.workers.asgi import ASGIContext

log = logging.getLogger("polycorn.error")

# Request bytes that may wait unasked (pipelined requests, a body the app has not
# asked for yet) before reading pauses: flow control toward the client.
HIGH_WATER = 64 * 1024
INFINITY = float("inf")
_monotonic = time.monotonic
_IDLE, _READING, _WRITING, _LINGERING, _CLOSED = (
    Phase.IDLE, Phase.READING, Phase.WRITING, Phase.LINGERING, Phase.CLOSED)


class ASGIProtocol(HTTPProtocol):
    __slots__ = ("cycle", "read_paused", "backlog", "body_waiter", "drain_waiter",
                 "discarded", "ws", "ws_trace")

    def __init__(self, ctx: ASGIContext, builder: Any) -> None:
        super().__init__(ctx, builder)
        self.cycle: Cycle | None = None  # the request whose response is not over yet
        self.read_paused = False
        self.backlog = 0  # bytes received while the app did not ask for any
        self.body_waiter: asyncio.Future | None = None
        self.drain_waiter: asyncio.Future | None = None
        self.discarded = -1  # >= 0 while an unread body is drained after its response
        self.ws: asgi_websocket.WebSocketSession | None = None  # after an upgrade
        self.ws_trace: Trace | None = None

    @property
    def gone(self) -> bool:
        return self.phase is _CLOSED

    # -- asyncio callbacks ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase is _LINGERING:
            self.lingered += len(data)
            if self.lingered > LINGER_BYTES:
                self._close()
            return
        if phase is _CLOSED:
            return
        if self.ws is not None:
            self.ws.feed(data)
            return
        self.conn.receive_data(data)
        if self.cycle is not None:
            waiter = self.body_waiter
            if waiter is not None:
                self.body_waiter = None
                waiter.set_result(None)
            else:
                self.backlog += len(data)
                if self.backlog > HIGH_WATER and not self.read_paused:
                    self.read_paused = True
                    self.transport.pause_reading()
            return
        self._process()

    def eof_received(self) -> bool | None:
        if self.phase is _LINGERING or self.ws is not None:
            self._close()
            return None
        self.conn.receive_data(b"")
        cycle = self.cycle
        if cycle is not None:
            cycle.hang_up()
            waiter = self.body_waiter
            if waiter is not None:
                self.body_waiter = None
                waiter.set_result(None)  # the parser now says whether the body was whole
        else:
            self._process()
        return True  # our side stays open: the response may still be on its way

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = _CLOSED
        for waiter in (self.body_waiter, self.drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self.body_waiter = self.drain_waiter = None
        if self.ws is not None:
            self.ws.connection_lost()
        cycle = self.cycle
        if cycle is not None:
            cycle.client_gone()
            task = cycle.task
            if task is not None and not task.done():
                grace = self.ctx.disconnect_grace
                if grace > 0:
                    self.ctx.loop.call_later(grace, _cancel_if_pending, task)
                else:
                    task.cancel()
        self.ctx.connection_closed(self)

    # -- waiting, from the app's task -------------------------------------------------

    async def wait_for_data(self) -> None:
        """Until more request bytes (or EOF, or the end) arrive; reading resumes for it."""
        self.backlog = 0
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        waiter = self.body_waiter = self.ctx.loop.create_future()
        self.deadline = _monotonic() + self.ctx.request_timeout  # a body that stops arriving
        try:
            await waiter
        finally:
            if self.phase is not _CLOSED:
                self.deadline = INFINITY

    async def wait_for_drain(self) -> None:
        """Until the transport's write buffer drains below its low mark (or the client leaves)."""
        waiter = self.drain_waiter = self.ctx.loop.create_future()
        self.phase = _WRITING
        self.deadline = _monotonic() + self.ctx.request_timeout  # a client that never reads
        try:
            await waiter
        finally:
            if self.phase is _WRITING:
                self.phase = _READING
                self.deadline = INFINITY

    # -- the request cycle -----------------------------------------------------------

    def _process(self) -> None:
        """Parse buffered bytes until a request is handed to the app or more bytes are needed."""
        conn = self.conn
        while self.cycle is None and self.phase is not _CLOSED:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self.discarded = -1
                self._refuse(exc)
                return
            kind = event.__class__
            if kind is Request:
                try:  # built now: a request Gunicorn refuses is refused before the app runs
                    environ = self.builder.build(event, self.client_addr, EMPTY_INPUT,
                                                 self.client_entries)
                except RemoteProtocolError as exc:
                    self._refuse(exc)
                    return
                self._start(event, environ)
                return
            if kind is Data:  # an unread body, drained after its response
                self.discarded += len(event.data)
                if self.discarded > DRAIN_LIMIT:
                    self._end_connection(policy.end_after_response(conn, body_unread=True))
                    return
            elif kind is EndOfMessage:  # the drained body's end
                self.discarded = -1
                if conn.keep_alive:
                    self._next_cycle()
                else:  # a drain (TERM, --max-requests) began meanwhile
                    self._end_connection(policy.end_after_response(conn))
                return
            elif event is NEED_DATA:
                if self.served and self.discarded < 0 and not conn.trailing_data[0]:
                    self.phase = _IDLE
                    self.deadline = _monotonic() + self.ctx.keepalive
                else:
                    self.phase = _READING
                    self.deadline = _monotonic() + self.ctx.request_timeout
                return
            else:  # ConnectionClosed: the client closed between requests
                self._close()
                return

    def _start(self, request: Request, environ: dict) -> None:
        ctx = self.ctx
        self.phase = _READING
        self.deadline = INFINITY  # the app's own time is the master's --timeout heartbeat
        self.request = request
        self.environ = environ
        trace = Trace(environ, request, self.client_addr, ctx) if ctx.observed else None
        app = ctx.app_for(request.target)
        if asgi_websocket.wants_websocket(request, environ) and asgi_websocket.available():
            self._start_websocket(request, environ, trace, app)
            return
        self.cycle = cycle = Cycle(self, request, environ, trace)
        if not request.content_length and not request.chunked:
            # No body: its end is consumed now, so an app that never calls receive()
            # (most GET handlers) leaves no "unread body" to linger on.
            if self.conn.next_event().__class__ is EndOfMessage:
                cycle.body_done = True
                cycle.body_read = -1  # receive() owes the app one empty http.request
        scope = http_scope(request, environ, ctx.root_path, ctx.state,
                           headers=self._scope_headers(request))
        if trace is not None and ctx.pre_request is not None:
            try:
                ctx.pre_request(ctx.worker, trace.hook_request)
            except Exception as exc:
                self._app_failed(cycle, exc)
                return
        cycle.task = task = ctx.loop.create_task(self._run(cycle, app, scope))
        ctx.tasks.add(task)
        task.add_done_callback(ctx.tasks.discard)

    async def _run(self, cycle: Cycle, app: Any, scope: dict) -> None:
        try:
            await app(scope, cycle.receive, cycle.send)
        except asyncio.CancelledError:
            # Cancelled by us: the client left (grace period over) or the worker stops now.
            if not cycle.done or self.cycle is cycle:
                self._client_gone_end(cycle, None)
        except BaseException as exc:
            if self._app_raised(cycle, exc):
                raise
        else:
            if self.cycle is cycle:  # the app returned before its response was over
                self._returned_early(cycle)
        finally:
            # A whole response is logged once the app returned (policy.py's order: the
            # app's end, as an iterable's close(), then the access log, then
            # post_request), as Gunicorn's -k asgi does; the connection went on to its
            # next request when the response ended (see response_done).
            if cycle.whole and cycle.trace is not None:
                self._log(cycle, cycle.body_bytes)

    def _app_raised(self, cycle: Cycle, exc: BaseException) -> bool:
        """The app raised: log it, end the cycle; whether to raise it on (SystemExit)."""
        if cycle.done and self.cycle is not cycle:
            if not isinstance(exc, OSError) or not cycle.disconnected:
                log.error("Exception in ASGI application after its response (%s %s)",
                          cycle.environ.get("REQUEST_METHOD"), cycle.environ.get("RAW_URI"),
                          exc_info=exc)
            return False
        self._app_failed(cycle, exc)
        return isinstance(exc, SystemExit | KeyboardInterrupt)

    def _returned_early(self, cycle: Cycle) -> None:
        if cycle.disconnected:
            self._client_gone_end(cycle, None)
        elif cycle.body_failed is not None and not cycle.head_sent:
            self._body_refused(cycle, cycle.body_failed)
        else:
            self._app_failed(cycle, RuntimeError(
                "the ASGI app returned without completing its response"))

    def _scope_headers(self, request: Request) -> list[tuple[bytes, bytes]]:
        """The headers --header-map lets through (names with "_", as in the environ)."""
        entries = self.client_entries
        trusted = entries[1] if entries is not None else False
        return self.builder.scope_headers(request.headers, trusted)

    # -- websockets --------------------------------------------------------------------

    def _start_websocket(self, request: Request, environ: dict, trace: Trace | None,
                         app: Any) -> None:
        """Hand the connection to a WebSocketSession (the HTTP parser is done with it)."""
        ctx = self.ctx
        scope = http_scope(request, environ, ctx.root_path, ctx.state, kind="websocket",
                           headers=self._scope_headers(request))
        self.ws_trace = trace
        self.ws = session = asgi_websocket.WebSocketSession(
            self, request, scope, self.conn.trailing_data[0])
        if session.handshake_event is None:  # wsproto refused the handshake itself
            self.ws = None
            self._refuse(RemoteProtocolError("invalid WebSocket handshake", 400))
            return
        task = ctx.loop.create_task(self._run_websocket(session, app, scope))
        ctx.tasks.add(task)
        task.add_done_callback(ctx.tasks.discard)

    async def _run_websocket(self, session: Any, app: Any, scope: dict) -> None:
        try:
            await app(scope, session.receive, session.send)
        except asyncio.CancelledError:
            return
        except Exception as exc:
            if not (isinstance(exc, OSError) and self.gone):
                log.error("Exception in ASGI application (websocket %s)", scope.get("path"),
                          exc_info=exc)
            if not session.accepted and not session.closed and not self.gone:
                self.transport.write(self.conn.error_response(500))
                self._ws_logged(500)
                self._close()
                return
        if self.gone:
            return
        if not session.accepted and not session.closed:
            await session.send({"type": "websocket.close"})  # returned without accepting: 403
        elif not session.closed:
            session._close(1000)

    def websocket_accepted(self, session: Any) -> None:
        self._ws_logged(101)

    def websocket_refused(self, session: Any) -> None:
        self._ws_logged(403)
        self.close_soon()

    def _ws_logged(self, status: int) -> None:
        trace = self.ws_trace
        if trace is not None:
            self.ws_trace = None
            trace.log(policy.status_line(status), [], 0)
        self.served += 1
        self.ctx.count_request()

    def close_soon(self) -> None:
        """After a close frame: close once both sides said so, else within LINGER_SECONDS."""
        ws = self.ws
        if ws is None or self.gone:
            return
        if ws.ws.state.name in ("CLOSED", "REJECTING"):
            self._close()
        else:
            self.deadline = asgi_websocket.linger_deadline()

    def response_done(self, cycle: Cycle) -> None:
        """The whole response went out: count, then the connection's next move (the
        access log and post_request wait for the app's return: _run)."""
        cycle.finish(whole=True)
        self._cycle_over()
        conn = self.conn
        if self.phase is _CLOSED:
            return
        if conn.keep_alive:
            self._next_cycle()
            return
        if (conn.persistent and not cycle.body_done and cycle.body_failed is None
                and policy.may_drain(keep_alive_allowed=self.ctx.keepalive > 0,
                                     request_keep_alive=cycle.request.keep_alive)):
            # The app did not read its whole body: skip up to DRAIN_LIMIT of it to keep
            # the connection (a small form is cheaper to skip than a reconnect).
            self.discarded = 0
            self._resume_reading()
            self._process()
            return
        self._end_connection(policy.end_after_response(conn, body_unread=not cycle.body_done))

    def _next_cycle(self) -> bool:
        """Start the next request cycle on this connection (a pipelined request starts now)."""
        self.conn.start_next_cycle()
        self.phase = _READING
        self._resume_reading()
        if self.discarded < 0:
            self._process()
        return True

    def _resume_reading(self) -> None:
        self.backlog = 0
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def _cycle_over(self) -> None:
        self.cycle = None
        self.request = None
        self.served += 1
        self.ctx.count_request()

    def _log(self, cycle: Cycle, produced: int) -> None:
        trace = cycle.trace
        if trace is None:
            return
        status = cycle.status
        sent = policy.sent_body_bytes(cycle.request.method == b"HEAD", status, produced)
        trace.log(policy.status_line(status) if status else None,
                  [(n.decode("latin-1"), v.decode("latin-1")) for n, v in cycle.headers or ()],
                  sent)

    # -- failed cycles ---------------------------------------------------------------------

    def _app_failed(self, cycle: Cycle, exc: BaseException) -> None:
        """The app raised (or returned early) before its response was over: policy.py's verdict."""
        closed = self.phase is _CLOSED or cycle.disconnected
        if closed:
            self._client_gone_end(cycle, exc)
            return
        conn = self.conn
        verdict = policy.failure_verdict(
            Failure.APP_ERROR, response_started=cycle.head_sent,
            client_may_send=policy.client_may_send(conn, body_unread=not cycle.body_done))
        log_failure(verdict.log_level, verdict.traceback, exc, self.client_addr, cycle.environ)
        cycle.finish()
        if verdict.answer is not None:
            self.transport.write(conn.error_response(verdict.answer))
            if cycle.trace is not None:
                cycle.trace.log(policy.status_line(verdict.answer), policy.ERROR_HEADERS, 0)
        elif verdict.observed:
            self._log(cycle, cycle.body_bytes)
        self._cycle_over()
        self._end_connection(verdict.end)

    def _body_refused(self, cycle: Cycle, exc: RemoteProtocolError) -> None:
        """The request body broke HTTP/1.1 and the app answered nothing: exc.status."""
        log.debug("bad request body from %s: %s", self.client_addr, exc)
        conn = self.conn
        verdict = policy.failure_verdict(Failure.BAD_REQUEST, response_started=False,
                                        client_may_send=policy.client_may_send(
                                            conn, body_unread=True), status=exc.status)
        cycle.finish()
        if verdict.answer is not None:
            self.transport.write(conn.error_response(verdict.answer, str(exc)))
            if cycle.trace is not None:
                cycle.trace.log(policy.status_line(verdict.answer), policy.ERROR_HEADERS, 0)
        self._cycle_over()
        self._end_connection(verdict.end)

    def _client_gone_end(self, cycle: Cycle, exc: BaseException | None) -> None:
        if self.cycle is not cycle:
            return
        verdict = policy.failure_verdict(Failure.CLIENT_GONE, response_started=cycle.head_sent,
                                        client_may_send=False)
        log_failure(verdict.log_level, verdict.traceback, exc, self.client_addr, cycle.environ)
        cycle.finish()
        if verdict.observed:
            self._log(cycle, cycle.body_bytes)
        self._cycle_over()
        if self.phase is not _CLOSED:
            self._close()

    # -- called by the worker ---------------------------------------------------------------

    def expire(self, now: float) -> None:
        """The worker's sweep: end a connection past its deadline."""
        if now < self.deadline or self.phase is _CLOSED:
            return
        if self.ws is not None:
            self.transport.abort()  # no close frame back within LINGER_SECONDS
            return
        if self.cycle is not None:
            # The app waits on a client that stopped sending its body or reading the
            # response: the client is gone for the app (http.disconnect, then the grace).
            log.debug("client %s stalled past --timeout; closing", self.client_addr)
            self.transport.abort()
            return
        self._close()

    def drain(self) -> None:
        """Graceful stop: idle connections close; a response under way will say close;
        a websocket gets a close frame (1001)."""
        if self.ws is not None:
            self.ws.going_away()
            return
        self.conn.refuse_keep_alive()
        if self.cycle is None and self.phase is _IDLE and self.served:
            self._close()


def _cancel_if_pending(task: asyncio.Task) -> None:
    if not task.done():
        task.cancel()
