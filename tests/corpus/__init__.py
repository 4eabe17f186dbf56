"""The request corpus: raw requests with their expected parse, Gunicorn's tests/requests in a table.

``valid.CASES`` gives the Request event, body and trailers each raw request must
yield; ``invalid.CASES`` the status of the RemoteProtocolError it must raise.
Every case name starts with the RFC section (or "limits-" for our Limits) it
exercises. tests/http/test_http_corpus.py replays each case whole, byte by byte,
in seeded random splits and followed by a pipelined request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from polycorn.server.http.connection import Limits
from polycorn.server.http.events import Headers, Request

DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Valid:
    name: str
    raw: bytes
    request: Request
    body: bytes = b""
    trailers: Headers = ()
    limits: Limits = DEFAULT_LIMITS


@dataclass(frozen=True)
class Invalid:
    name: str
    raw: bytes
    status: int
    limits: Limits = DEFAULT_LIMITS
    eof: bool = False  # the client closes after raw (an early end is the fault)
    notes: str = field(default="", compare=False)


def head(request_line: bytes, *fields: bytes) -> bytes:
    """A request head: the request line and field lines, each ending CRLF, then CRLF."""
    return b"".join(line + b"\r\n" for line in (request_line, *fields)) + b"\r\n"


def req(
    method: bytes = b"GET",
    target: bytes = b"/",
    headers: Headers = ((b"host", b"example.com"),),
    *,
    version: bytes = b"1.1",
    content_length: int | None = None,
    chunked: bool = False,
    keep_alive: bool | None = None,
    expect_continue: bool = False,
) -> Request:
    """The expected Request event; keep_alive defaults to the version's default."""
    if keep_alive is None:
        keep_alive = version == b"1.1"
    return Request(method, target, version, tuple(headers), content_length, chunked,
                   keep_alive, expect_continue)
