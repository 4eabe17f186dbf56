"""The PROXY protocol gate of the event worker: an asyncio Protocol that owns a new
connection until its header is read, then hands the transport to the HTTP protocol.

Same policy as proxy_gate.ProxyGate (which this uses): the header is mandatory from an
allowed peer and read within PROXY_HEADER_TIMEOUT; a disallowed peer is handed over as
soon as its first bytes cannot begin a header (403 if they are one). The bytes after
the header are passed on untouched, in the same call, so nothing can run in between;
over TLS they are the ClientHello's first bytes, fed to the TLS layer (event_tls.py).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from polycorn.server.http.proxy_protocol import ProxyHeaderReader, ProxyProtocolError, detect
from polycorn.server.workers.event_tls import start_tls
from polycorn.server.workers.proxy_gate import Proxied, ProxyGate, Refused, forbidden_response


class ProxyGateProtocol(asyncio.Protocol):
    __slots__ = ("gate", "make_inner", "transport", "peer", "required", "reader", "buffer",
                 "timer", "done", "tls")

    def __init__(self, gate: ProxyGate, make_inner: Callable[[], Any],
                 tls: tuple[ssl.SSLContext, float] | None = None) -> None:
        self.gate = gate
        self.tls = tls  # (context, handshake timeout) when the listener serves TLS
        self.make_inner = make_inner
        self.transport: Any = None
        self.peer: Any = None
        self.required = True
        self.reader: ProxyHeaderReader | None = None
        self.buffer = b""  # a disallowed peer's first bytes, while they could begin a header
        self.timer: Any = None
        self.done = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.required = self.gate.requires_header(self.peer)
        if self.required:
            self.reader = ProxyHeaderReader(self.gate.mode)
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.gate.timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        if self.reader is not None:
            try:
                got = self.reader.feed(data)
            except ProxyProtocolError as exc:
                self._refuse(Refused(str(exc)))
                return
            if got is not None:
                header, rest = got
                self._hand_over(Proxied(header), rest)
            return
        self.buffer += data
        version = detect(self.buffer, self.gate.mode)
        if version == 0:
            self._hand_over(None, self.buffer)
        elif version:
            self._refuse(Refused(f"a PROXY v{version} header from a peer not in "
                                 f"--proxy-allow-from", status=403))

    def eof_received(self) -> bool | None:
        if self.done:
            return None
        if self.required:
            seen = len(self.reader.buffered) if self.reader is not None else 0
            self._refuse(Refused(f"closed after {seen} bytes of a PROXY header", quiet=not seen))
            return None
        # A plain client that closed (or half-closed) early: HTTP decides what that means.
        inner = self._hand_over(None, self.buffer)
        return inner.eof_received() if inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.done = True

    def _timed_out(self) -> None:
        self.timer = None
        if self.done:
            return
        if self.required:
            seen = len(self.reader.buffered) if self.reader is not None else 0
            self._refuse(Refused(f"no complete PROXY header within {self.gate.timeout:g}s "
                                 f"({seen} bytes)"))
        else:
            self._hand_over(None, self.buffer)  # silent so far: HTTP's deadlines take over

    def _refuse(self, exc: Refused) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        self.gate.refuse(self.peer, exc)
        if exc.status == 403:
            self.transport.write(forbidden_response())
            self.transport.close()  # after the write buffer is flushed
        else:
            self.transport.abort()

    def _hand_over(self, proxied: Proxied | None, rest: bytes) -> Any:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport = self.transport
        if transport.is_closing():
            return None
        inner = self.make_inner()
        if self.tls is not None:  # the header came before the ClientHello: TLS starts here
            inner.proxied = proxied  # applied in connection_made, after the handshake
            context, handshake_timeout = self.tls
            start_tls(transport, inner, context, handshake_timeout, rest)
            return None
        transport.set_protocol(inner)
        inner.connection_made(transport)
        if proxied is not None:
            inner.client_entries = proxied.environ_entries(inner.client_entries)
        if rest:
            inner.data_received(rest)
        return inner


def gated_factory(gate: ProxyGate | None, factory: Callable[[], Any],
                  tls: tuple[ssl.SSLContext, float] | None = None) -> Callable[[], Any]:
    """The listener's protocol factory, behind the gate when --proxy-protocol is on (then
    TLS, if any, starts after the header: the listener itself must not handshake)."""
    if gate is None:
        return factory

    def protocol() -> ProxyGateProtocol:
        return ProxyGateProtocol(gate, factory, tls)
    return protocol
