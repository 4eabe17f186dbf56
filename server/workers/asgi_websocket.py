"""The ASGI `websocket` scope of the asgi worker, with wsproto (the `asgi` extra).

An HTTP/1.1 GET with "Upgrade: websocket" that the strict parser accepted is
handed here: wsproto checks the RFC 6455 handshake and frames the messages; the
app accepts (101) or closes (403) through its send(). A message (or the bytes
waiting for one) past --websocket-max-message-size closes the connection with
1009. Flow control: reading pauses while HIGH_WATER bytes of messages wait for
the app's receive(); send() awaits the transport's drain. A graceful stop sends
a close frame (1001, going away) and the app hears websocket.disconnect.
Without wsproto, an upgrade request is served as plain HTTP (RFC 9110 7.8 lets a
server ignore Upgrade), with one warning per worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from polycorn.server.wsgi.policy import LINGER_SECONDS

try:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Message,
        Ping,
        RejectConnection,
        TextMessage,
    )
    from wsproto.events import Request as WSRequest
    from wsproto.utilities import LocalProtocolError, RemoteProtocolError
except ImportError:  # the `asgi` extra is not installed
    WSConnection = None

if TYPE_CHECKING:
    from polycorn.server.workers.asgi_protocol import ASGIProtocol

log = logging.getLogger("polycorn.error")

HIGH_WATER = 64 * 1024  # message bytes waiting for the app before reading pauses
GOING_AWAY, TOO_BIG, ABNORMAL = 1001, 1009, 1006
_warned = False


def wants_websocket(request: Any, environ: dict) -> bool:
    """A GET asking to upgrade to websocket (RFC 6455 4.1); the environ's joined
    fields answer in two lookups (this runs on every request)."""
    upgrade = environ.get("HTTP_UPGRADE")
    if upgrade is None or request.method != b"GET" or request.http_version != b"1.1":
        return False
    return ("websocket" in upgrade.lower()
            and "upgrade" in environ.get("HTTP_CONNECTION", "").lower())


def available() -> bool:
    global _warned
    if WSConnection is None and not _warned:
        _warned = True
        log.warning("WebSocket upgrade served as plain HTTP: wsproto is not installed "
                    "(pip install 'polycorn[asgi]')")
    return WSConnection is not None


def _handshake_bytes(request: Any) -> bytes:
    """The request head again, for wsproto's own handshake check (h11 inside)."""
    lines = [b"%s %s HTTP/1.1" % (request.method, request.target)]
    lines += [name + b": " + value for name, value in request.headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class WebSocketSession:
    """One upgraded connection: wsproto's state, the app's queue, the app's callables."""

    def __init__(self, proto: ASGIProtocol, request: Any, scope: dict, trailing: bytes) -> None:
        self.proto = proto
        self.ctx = proto.ctx
        self.scope = scope
        self.ws = WSConnection(ConnectionType.SERVER)
        self.handshake_event: Any = None
        try:
            self.ws.receive_data(_handshake_bytes(request))
            for event in self.ws.events():
                if isinstance(event, WSRequest):
                    self.handshake_event = event
        except RemoteProtocolError as exc:
            log.debug("websocket handshake from %s refused: %s", proto.client_addr, exc)
        self.queue: deque[dict] = deque([{"type": "websocket.connect"}])
        self.waiter: asyncio.Future | None = None
        self.accepted = False
        self.closed = False  # a close frame went out (or the connection is gone)
        self.close_code: int | None = None
        self.parts: list = []  # of the message being received
        self.part_size = 0
        self.queued = 0  # message bytes waiting in the queue
        self.max_size = proto.ctx.websocket_max_size
        self.read_paused = False
        self.pending = trailing  # frames that came with the head, fed after the accept

    # -- from the connection ----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if not self.accepted:
            self.pending += data
            return
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                self._on_event(event)
        except RemoteProtocolError as exc:
            log.debug("websocket from %s broke RFC 6455: %s", self.proto.client_addr, exc)
            self._fail(1002)
        if self.queued > HIGH_WATER and not self.read_paused and not self.closed:
            self.read_paused = True
            self.proto.transport.pause_reading()

    def _on_event(self, event: Any) -> None:
        if isinstance(event, Message):
            self.part_size += len(event.data)
            if self.part_size > self.max_size:
                self._fail(TOO_BIG)
                return
            self.parts.append(event.data)
            if not event.message_finished:
                return
            text = isinstance(event, TextMessage)
            data = ("" if text else b"").join(self.parts)
            self.parts, self.part_size = [], 0
            self.queued += len(data)
            self._push({"type": "websocket.receive", "text": data} if text
                       else {"type": "websocket.receive", "bytes": data})
        elif isinstance(event, Ping):
            self._write(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if not self.closed:
                self.closed = True
                self._write(self.ws.send(event.response()))
            self._push({"type": "websocket.disconnect", "code": event.code,
                        "reason": event.reason or ""})
            self.proto.close_soon()
        elif isinstance(event, BytesMessage | TextMessage):  # pragma: no cover - Message above
            pass

    def connection_lost(self) -> None:
        if self.close_code is None:
            self.close_code = ABNORMAL
        self.closed = True
        self._push({"type": "websocket.disconnect", "code": self.close_code, "reason": ""})

    def going_away(self) -> None:
        """Graceful stop: a close frame (1001); the app hears websocket.disconnect."""
        if not self.accepted:
            return
        self._close(GOING_AWAY)
        self._push({"type": "websocket.disconnect", "code": GOING_AWAY, "reason": ""})

    def _fail(self, code: int) -> None:
        self._close(code)
        self._push({"type": "websocket.disconnect", "code": code, "reason": ""})

    def _close(self, code: int, reason: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        try:
            self._write(self.ws.send(CloseConnection(code=code, reason=reason)))
        except LocalProtocolError:
            pass
        self.proto.close_soon()

    def _push(self, message: dict) -> None:
        self.queue.append(message)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _write(self, data: bytes) -> None:
        if data and self.proto.transport is not None and not self.proto.transport.is_closing():
            self.proto.transport.write(data)

    # -- the app's callables ------------------------------------------------------------

    async def receive(self) -> dict:
        while not self.queue:
            if self.proto.gone:
                return {"type": "websocket.disconnect", "code": self.close_code or ABNORMAL,
                        "reason": ""}
            self.waiter = self.ctx.loop.create_future()
            await self.waiter
        message = self.queue.popleft()
        if message["type"] == "websocket.receive":
            self.queued -= len(message.get("text") or message.get("bytes") or "")
            if self.read_paused and self.queued <= HIGH_WATER // 2 and not self.closed:
                self.read_paused = False
                self.proto.transport.resume_reading()
        return message

    async def send(self, message: dict) -> None:
        kind = message["type"]
        proto = self.proto
        if proto.gone or (self.closed and self.accepted):
            raise OSError("the websocket is closed")
        if kind == "websocket.accept":
            if self.accepted:
                raise RuntimeError("websocket.accept sent twice")
            headers = [(bytes(n), bytes(v)) for n, v in message.get("headers") or ()]
            self._write(self.ws.send(AcceptConnection(
                subprotocol=message.get("subprotocol"), extra_headers=headers)))
            self.accepted = True
            proto.websocket_accepted(self)
            if self.pending:
                pending, self.pending = self.pending, b""
                self.feed(pending)
            return
        if kind == "websocket.close":
            if not self.accepted:  # RFC 6455 4.2.2: refuse the handshake (403, as uvicorn)
                self._write(self.ws.send(RejectConnection(status_code=403)))
                self.closed = True
                proto.websocket_refused(self)
                return
            self._close(int(message.get("code") or 1000), message.get("reason"))
            return
        if kind == "websocket.send" and self.accepted:
            text = message.get("text")
            data = self.ws.send(Message(data=text if text is not None else message["bytes"]))
            self._write(data)
            if proto.write_paused:
                await proto.wait_for_drain()
            return
        raise RuntimeError(f"unexpected ASGI message {kind!r} on a websocket")


def linger_deadline() -> float:
    return time.monotonic() + LINGER_SECONDS
