"""The events of one HTTP/1.1 exchange, as small frozen dataclasses (h11's model).

The parser turns bytes into these; the worker turns them into WSGI calls. A
request's framing (length, chunked, keep-alive, 100-continue) is decided once by
the parser and carried on the Request event, so no caller re-derives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# The type of NEED_DATA and PAUSED, for annotations.
Sentinel = _Sentinel

# next_event() returns NEED_DATA when it must be fed more bytes, and PAUSED
# after a request's EndOfMessage until the response is complete and the
# connection's next cycle is started (pipelined bytes wait in the buffer).
NEED_DATA: Final = _Sentinel("NEED_DATA")
PAUSED: Final = _Sentinel("PAUSED")

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Request:
    """A request head. Header names are lower-cased; values have OWS stripped."""

    method: bytes
    target: bytes
    http_version: bytes  # b"1.1" or b"1.0"
    headers: Headers
    # Framing, decided by the parser per RFC 9112 section 6.
    content_length: int | None = None  # None when chunked or no body
    chunked: bool = False
    keep_alive: bool = True  # what the client asked for (RFC 9112 9.3)
    expect_continue: bool = False  # "Expect: 100-continue" on HTTP/1.1


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of request body (already de-chunked)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The request body is complete. Trailers come from a chunked body only."""

    trailers: Headers = field(default=())


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The client closed its side cleanly between requests."""
