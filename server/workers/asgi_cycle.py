"""One request of the asgi worker as the app sees it: its receive() and send().

The connection (asgi_protocol.py) owns the parser and the transport; a Cycle reads
the body through the parser only when the app asks, frames what the app sends,
and tells the connection when the response is over (response_done) or must wait
(wait_for_data, wait_for_drain). Messages follow ASGI 3.0 (spec 2.4: send() after
the client left raises an OSError).
"""

from __future__ import annotations

import asyncio
import http
from typing import TYPE_CHECKING, Any

from polycorn.server.http.errors import LocalProtocolError, RemoteProtocolError
from polycorn.server.http.events import NEED_DATA, Data, EndOfMessage, Request
from polycorn.server.workers.base import RunState
from polycorn.server.workers.event_protocol import Phase
from polycorn.server.wsgi import policy
from polycorn.server.wsgi.policy import DRAIN_LIMIT
from polycorn.server.wsgi.trace import Trace

if TYPE_CHECKING:
    from polycorn.server.workers.asgi_protocol import ASGIProtocol

DISCONNECT = {"type": "http.disconnect"}
EMPTY_REQUEST = {"type": "http.request", "body": b"", "more_body": False}
_CLOSED = Phase.CLOSED
_WORKER_RUNNING = RunState.RUNNING
_REASONS = {status.value: status.phrase.encode("latin-1") for status in http.HTTPStatus}


class ClientDisconnected(OSError):
    """send() after the client went away (ASGI 2.4: an OSError subclass)."""


class Cycle:
    """One request handed to the app: its receive/send callables and what they did."""

    __slots__ = ("proto", "request", "environ", "trace", "task", "status", "headers",
                 "head_sent", "done", "body_done", "body_failed", "body_bytes",
                 "disconnected", "hung_up", "continue_sent", "body_read", "_gone", "whole")

    def __init__(self, proto: ASGIProtocol, request: Request, environ: dict,
                 trace: Trace | None) -> None:
        self.proto = proto
        self.request = request
        self.environ = environ
        self.trace = trace
        self.task: asyncio.Task | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] | None = None  # from http.response.start
        self.head_sent = False
        self.done = False  # the whole response went out (or the cycle ended otherwise)
        self.body_done = False  # the request body was read to its end
        self.body_failed: RemoteProtocolError | None = None
        self.body_bytes = 0
        self.disconnected = False
        self.hung_up = False  # EOF from the client: it sends nothing more
        self.continue_sent = False
        self.body_read = 0  # request body bytes given to the app
        self._gone: asyncio.Future | None = None  # receive() after the body waits on it
        self.whole = False  # the whole response went out (logged once the app returns)

    # -- the app's callables ------------------------------------------------------------

    async def receive(self) -> dict:
        proto = self.proto
        if self.done or self.disconnected:
            return DISCONNECT
        if self.body_read < 0:  # a request without a body, its end consumed at the start
            self.body_read = 0
            return EMPTY_REQUEST
        if self.body_done:
            # Nothing more to read: the app listens for the client leaving (its EOF or
            # reset) or the response's end. A cancelled wait leaves a done future behind.
            if not self.hung_up:
                if self._gone is None or self._gone.done():
                    self._gone = proto.ctx.loop.create_future()
                await self._gone
            return DISCONNECT
        conn = proto.conn
        while True:
            chunks = []
            try:
                event = conn.next_event()
                while event.__class__ is Data:
                    chunks.append(event.data)
                    event = conn.next_event()
            except RemoteProtocolError as exc:
                # The body broke HTTP/1.1: the app hears a disconnect; the connection ends
                # with exc.status if the app answers nothing (policy: BAD_REQUEST).
                self.body_failed = exc
                self.body_done = True
                return DISCONNECT
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self.body_read += len(body)
            if event.__class__ is EndOfMessage:
                self.body_done = True
                return {"type": "http.request", "body": body, "more_body": False}
            if body:
                return {"type": "http.request", "body": body, "more_body": True}
            if event is not NEED_DATA:  # PAUSED cannot come before EndOfMessage
                raise RuntimeError(f"unexpected parser event {event!r}")
            if not self.continue_sent:
                self.continue_sent = True
                interim = conn.continue_bytes()  # "100 Continue" once the app asks for the body
                if interim:
                    proto.transport.write(interim)
            await proto.wait_for_data()
            if self.disconnected or proto.phase is _CLOSED:
                return DISCONNECT

    async def send(self, message: dict) -> None:
        proto = self.proto
        if self.disconnected or proto.phase is _CLOSED:
            raise ClientDisconnected("the client went away")
        if self.done:
            raise RuntimeError(f"ASGI message {message.get('type')!r} after the response ended")
        kind = message["type"]
        if self.headers is None:
            if kind != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {kind!r}")
            self.status = message["status"]
            self.headers = [(name, value) for name, value in message.get("headers", ())]
            return
        if kind != "http.response.body":
            raise RuntimeError(f"expected http.response.body, got {kind!r}")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        try:
            data = self._frame(proto.conn, body, more)
        except LocalProtocolError as exc:
            # The app's mistake. A head refused (a bad header) sent nothing: the app's
            # 500 is still possible. A body short of its Content-Length is sent as far as
            # it goes, then the failure cuts the connection (policy: an app error after
            # the head), so the client sees it truncated, never completed by the next one.
            self.head_sent = proto.conn.response_started
            framed = getattr(exc, "framed", b"")
            if framed:
                self.body_bytes += len(body)
                proto.transport.write(framed)
            raise
        self.body_bytes += len(body)
        if data:
            proto.transport.write(data)
        if not more:
            proto.response_done(self)
        elif proto.write_paused:
            await proto.wait_for_drain()
            if self.disconnected or proto.phase is _CLOSED:
                raise ClientDisconnected("the client went away")

    def _frame(self, conn: Any, body: bytes, more: bool) -> bytes:
        """The bytes of one http.response.body message (with the head, the first time)."""
        if not self.head_sent:
            self._before_head()
            status = self.status
            reason = _REASONS.get(status, b"Unknown")
            if not more:
                data = conn.respond_whole(status, reason, self.headers, body)
                self.head_sent = True
                return data
            data = conn.start_response(status, reason, self.headers)
            self.head_sent = True
            return data + conn.send_body(body) if body else data
        data = conn.send_body(body) if body else b""
        if more:
            return data
        try:
            return data + conn.end_response()
        except LocalProtocolError as exc:
            exc.framed = data  # as respond_whole does: what may go out before the cut
            raise

    def _before_head(self) -> None:
        """Say Connection: close now when the connection will not carry another request
        (policy.head_says_close; its common answer, a read body and a running worker,
        is found here without the call)."""
        proto = self.proto
        running = proto.ctx.worker.state is _WORKER_RUNNING
        if self.body_done and running:
            return
        request = self.request
        unread = 0
        if not self.body_done and request.content_length is not None:
            unread = request.content_length - self.body_read
        if policy.head_says_close(
                worker_running=running,
                continue_pending=request.expect_continue and not self.continue_sent,
                unread_over_limit=unread > DRAIN_LIMIT):
            proto.conn.refuse_keep_alive()

    # -- ends -------------------------------------------------------------------------

    def finish(self, whole: bool = False) -> None:
        """The cycle is over for the app: receive() says disconnect from now on."""
        self.done = True
        if whole:
            self.whole = True
        gone = self._gone
        if gone is not None and not gone.done():
            gone.set_result(None)

    def client_gone(self) -> None:
        self.disconnected = True
        self.finish()

    def hang_up(self) -> None:
        """The client's EOF: an app listening for http.disconnect hears it; a response
        may still go out (a half-closed client may be waiting for it, RFC 9112 9.6)."""
        self.hung_up = True
        gone = self._gone
        if gone is not None and not gone.done():
            gone.set_result(None)
