"""Request body readers, one small class per framing (none, Content-Length, chunked).

A reader turns buffered bytes into Data and a final EndOfMessage and returns
None when it needs more bytes; None at EOF means the body was cut short, which
the connection refuses (400), never passing it off as a complete short body.
"""

from __future__ import annotations

import enum
from typing import Protocol

from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.events import Data, EndOfMessage, Request
from polycorn.server.http.grammar import chunk_line_re
from polycorn.server.http.headers import parse_field_section
from polycorn.server.http.limits import Limits
from polycorn.server.http.receivebuffer import ReceiveBuffer

_END = EndOfMessage()


class BodyReader(Protocol):
    def read(self, buf: ReceiveBuffer) -> Data | EndOfMessage | None:
        """The next event from the buffered bytes, or None when more bytes are needed."""


class NoBodyReader:
    """RFC 9112 6.3 (7): a request with neither Content-Length nor Transfer-Encoding."""

    __slots__ = ()

    def read(self, buf: ReceiveBuffer) -> EndOfMessage:
        return _END


class ContentLengthReader:
    __slots__ = ("_remaining",)

    def __init__(self, length: int) -> None:
        self._remaining = length

    def read(self, buf: ReceiveBuffer) -> Data | EndOfMessage | None:
        if not self._remaining:
            return _END
        if not buf:
            return None
        data = buf.extract(self._remaining)
        self._remaining -= len(data)
        return Data(data)


class _ChunkedState(enum.Enum):
    SIZE_LINE = "chunk-size line"
    DATA = "chunk data"
    DATA_END = "CRLF after chunk data"
    TRAILERS = "trailer section"


class ChunkedReader:
    """RFC 9112 7.1: chunk-size [ chunk-ext ] CRLF chunk-data CRLF ... last-chunk trailers CRLF."""

    __slots__ = ("_limits", "_state", "_remaining", "_trailer_lines", "_size_line_limit")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._state = _ChunkedState.SIZE_LINE
        self._remaining = 0
        self._trailer_lines: list[bytes] = []
        self._size_line_limit = limits.max_chunk_size_digits + limits.max_chunk_ext_size + 2

    def read(self, buf: ReceiveBuffer) -> Data | EndOfMessage | None:
        while True:
            state = self._state
            if state is _ChunkedState.DATA:
                if not buf:
                    return None
                data = buf.extract(self._remaining)
                self._remaining -= len(data)
                if not self._remaining:
                    self._state = _ChunkedState.DATA_END
                return Data(data)
            if state is _ChunkedState.SIZE_LINE:
                line = buf.extract_line()
                if line is None:
                    if len(buf) > self._size_line_limit:
                        raise RemoteProtocolError("chunk-size line too long")
                    return None
                self._start_chunk(line)
            elif state is _ChunkedState.DATA_END:
                if len(buf) < 2:
                    if buf and not buf.startswith(b"\r"):
                        raise RemoteProtocolError("chunk data not followed by CRLF")
                    return None
                if buf.extract(2) != b"\r\n":
                    raise RemoteProtocolError("chunk data not followed by CRLF")
                self._state = _ChunkedState.SIZE_LINE
            else:
                return self._read_trailers(buf)

    def _start_chunk(self, line: bytes) -> None:
        match = chunk_line_re.fullmatch(line)
        if match is None:
            raise RemoteProtocolError("malformed chunk-size line")
        digits, extensions = match.groups()
        if len(digits) > self._limits.max_chunk_size_digits:
            raise RemoteProtocolError("chunk size has too many digits")
        if len(extensions) > self._limits.max_chunk_ext_size:
            raise RemoteProtocolError("chunk extensions too long")
        self._remaining = int(digits, 16)
        self._state = _ChunkedState.DATA if self._remaining else _ChunkedState.TRAILERS

    def _read_trailers(self, buf: ReceiveBuffer) -> EndOfMessage | None:
        # Trailer fields obey the header rules and limits (RFC 9112 7.1.2).
        limits = self._limits
        lines = self._trailer_lines
        while True:
            line = buf.extract_line()
            if line is None:
                if limits.max_header_size and len(buf) - buf.ends_with_cr() > limits.max_header_size:
                    raise RemoteProtocolError("trailer field too large", 431)
                return None
            if line == b"\r\n":
                break
            # Size before line ending, as when the line was still partial: one verdict
            # whatever the split.
            if limits.max_header_size and len(line) - 1 - line.endswith(b"\r\n") > limits.max_header_size:
                raise RemoteProtocolError("trailer field too large", 431)
            if not line.endswith(b"\r\n"):
                raise RemoteProtocolError("bare LF in the trailer section")
            if len(lines) == limits.header_count:
                raise RemoteProtocolError("too many trailer fields", 431)
            lines.append(line)
        if not lines:
            return _END
        trailers = parse_field_section(b"".join(lines), limits.permit_obsolete_folding)
        return EndOfMessage(tuple(trailers))


def body_reader(request: Request, limits: Limits) -> BodyReader:
    """The reader for the framing decided when the request head was parsed."""
    if request.chunked:
        return ChunkedReader(limits)
    if request.content_length is not None:
        return ContentLengthReader(request.content_length)
    return _NO_BODY


_NO_BODY = NoBodyReader()
