"""TLS after the PROXY header on the event worker: the ClientHello's first bytes may already
have been read with the header, so the TLS layer must start from them.

loop.start_tls would drop bytes already received (both asyncio's and uvloop's), so this
puts the standard library's own TLS protocol (asyncio.sslproto.SSLProtocol: an
ssl.MemoryBIO/SSLObject pump, what start_tls and create_server(ssl=) use inside) on the
transport and feeds it those bytes first. It works on asyncio's and uvloop's transports
alike (tests/server/test_tls*.py run both). Without --proxy-protocol the listener
handshakes by itself (create_server(ssl=..., ssl_handshake_timeout=...)).
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio.sslproto import SSLProtocol
from typing import Any


def start_tls(transport: Any, inner: Any, context: ssl.SSLContext, handshake_timeout: float,
              received: bytes) -> None:
    """Serve `inner` over TLS on `transport`, `received` being the first bytes of the
    handshake; inner.connection_made runs once the handshake completes. A handshake that
    fails or outlasts handshake_timeout aborts the connection (the client's business)."""
    tls = SSLProtocol(asyncio.get_running_loop(), inner, context, None, server_side=True,
                      call_connection_made=True, ssl_handshake_timeout=handshake_timeout)
    transport.set_protocol(tls)
    tls.connection_made(transport)
    data = memoryview(received)
    while data:  # the BufferedProtocol way, as the transport itself would deliver them
        view = tls.get_buffer(len(data))
        n = min(len(view), len(data))
        view[:n] = data[:n]
        tls.buffer_updated(n)
        data = data[n:]
