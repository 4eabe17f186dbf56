"""Response body writers, one small class per framing the response head chose.

``send`` frames one piece of body, ``finish`` ends the body. A writer that a
caller overruns or leaves short raises LocalProtocolError: a response whose
length lies to the client must not pass silently.
"""

from __future__ import annotations

from typing import Protocol

from polycorn.server.http.errors import LocalProtocolError


class BodyWriter(Protocol):
    def send(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class NoBodyWriter:
    """HEAD, 1xx, 204, 304: no body bytes on the wire whatever the app yields (RFC 9110 6.4.1)."""

    __slots__ = ()

    def send(self, data: bytes) -> bytes:
        return b""

    def finish(self) -> bytes:
        return b""


class ContentLengthWriter:
    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    def send(self, data: bytes) -> bytes:
        if len(data) > self.remaining:
            raise LocalProtocolError("response body longer than its Content-Length")
        self.remaining -= len(data)
        return data

    def finish(self) -> bytes:
        if self.remaining:
            raise LocalProtocolError(
                f"response body {self.remaining} bytes short of its Content-Length"
            )
        return b""


class ChunkedWriter:
    """RFC 9112 7.1; an empty piece is skipped, as a zero-size chunk would end the body."""

    __slots__ = ()

    def send(self, data: bytes) -> bytes:
        if not data:
            return b""
        return b"%x\r\n%b\r\n" % (len(data), data)

    def finish(self) -> bytes:
        return b"0\r\n\r\n"


class CloseDelimitedWriter:
    """RFC 9112 6.3 (8): HTTP/1.0 without a length; the close marks the end of the body."""

    __slots__ = ()

    def send(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


NO_BODY = NoBodyWriter()
