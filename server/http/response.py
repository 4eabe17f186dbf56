"""Response heads: validate what the app gave, choose the body framing, serialise once.

The app's status, reason and fields are checked in bulk before anything is
written (a CR or LF would split the response: LocalProtocolError, 500). Hop-by-hop
framing is ours: the app's Transfer-Encoding is dropped and its Connection read
only for "close". The head is a list of parts joined into bytes once.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import NamedTuple

from polycorn.server.http.errors import LocalProtocolError
from polycorn.server.http.events import Request
from polycorn.server.http.grammar import content_length_re, token_lines_re
from polycorn.server.http.headers import split_list
from polycorn.server.http.httpdate import DateCache
from polycorn.server.http.writers import (
    NO_BODY,
    BodyWriter,
    ChunkedWriter,
    CloseDelimitedWriter,
    ContentLengthWriter,
)

SERVER_NAME = b"polycorn"

# RFC 9110 5.5: CR, LF and NUL in a field value (or reason) would forge lines.
_forbidden_text_re = re.compile(rb"[\r\n\x00]")
_SPECIAL = frozenset((b"content-length", b"connection", b"transfer-encoding", b"date", b"server"))


class ResponseHead(NamedTuple):
    head: bytes
    writer: BodyWriter
    persistent: bool  # may the connection carry another request after this response?


def frame_response(
    request: Request,
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    persistent: bool,
    date: bytes,
) -> ResponseHead:
    """Build the head of the response to ``request``; ``persistent`` is the connection's say so far."""
    _validate(status, reason, headers)
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    content_length: bytes | None = None
    app_sets_date = app_sets_server = False
    for name, value in headers:
        lower = name.lower()
        if lower in _SPECIAL:
            if lower == b"content-length":
                content_length = _merge_content_length(content_length, value)
                continue
            if lower == b"connection":
                if b"close" in split_list([value]):
                    persistent = False
                continue
            if lower == b"transfer-encoding":
                continue  # we frame the body ourselves (RFC 9112 6.1)
            if lower == b"date":
                app_sets_date = True
            else:
                app_sets_server = True
        parts += (name, b": ", value, b"\r\n")

    writer, persistent = _choose_body_framing(request, status, content_length, persistent, parts)
    if not persistent:
        parts.append(b"Connection: close\r\n")
    elif request.http_version == b"1.0":
        parts.append(b"Connection: keep-alive\r\n")  # RFC 9112 9.3: 1.0 persists only if said
    if not app_sets_date:
        parts += (b"Date: ", date, b"\r\n")
    if not app_sets_server:
        parts.append(b"Server: " + SERVER_NAME + b"\r\n")
    parts.append(b"\r\n")
    return ResponseHead(b"".join(parts), writer, persistent)


def _choose_body_framing(request: Request, status: int, content_length: bytes | None,
                         persistent: bool, parts: list[bytes]) -> tuple[BodyWriter, bool]:
    """The body's writer and the connection's persistence; appends the framing field to parts."""
    if status < 200 or status == 204:
        # RFC 9110 8.6: no Content-Length in a 1xx or 204; neither has a body.
        # After a 1xx as final answer (101) the connection is no longer HTTP/1.1.
        return NO_BODY, persistent and status >= 200
    if request.method == b"HEAD" or status == 304:
        # RFC 9110 9.3.2, 15.4.5: the length of the body not sent is kept.
        if content_length is not None:
            parts += (b"Content-Length: ", content_length, b"\r\n")
        return NO_BODY, persistent
    if content_length is not None:
        parts += (b"Content-Length: ", content_length, b"\r\n")
        return ContentLengthWriter(int(content_length)), persistent
    if request.http_version == b"1.1":
        parts.append(b"Transfer-Encoding: chunked\r\n")
        return ChunkedWriter(), persistent
    return CloseDelimitedWriter(), False  # RFC 9112 6.3 (8)


def _validate(status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    if type(status) is not int or not 100 <= status <= 999:
        raise LocalProtocolError(f"status must be a three-digit integer, not {status!r}")
    try:
        names = b"\n".join([name for name, _ in headers])
        text = b"".join([value for _, value in headers]) + reason
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError("status reason and header names and values must be bytes") from exc
    if headers and (not token_lines_re.fullmatch(names) or names.count(b"\n") != len(headers) - 1):
        raise LocalProtocolError("header name is not a token")
    if _forbidden_text_re.search(text):
        raise LocalProtocolError("CR, LF or NUL in a header value or the reason")


def _merge_content_length(previous: bytes | None, value: bytes) -> bytes:
    value = value.strip(b" \t")
    if not content_length_re.fullmatch(value):
        raise LocalProtocolError("invalid Content-Length from the application")
    if previous is not None and previous != value:
        raise LocalProtocolError("conflicting Content-Length values from the application")
    return value


def build_error_response(status: int, message: str, *, date: bytes, head_only: bool) -> bytes:
    """A complete text/plain response that closes the connection."""
    if type(status) is not int or not 100 <= status <= 999:
        raise LocalProtocolError(f"status must be a three-digit integer, not {status!r}")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    body = (message or f"{status} {phrase}").encode("utf-8", "replace") + b"\n"
    head = b"".join((
        b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode("ascii")),
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"Connection: close\r\n",
        b"Date: ", date, b"\r\n",
        b"Server: ", SERVER_NAME, b"\r\n\r\n",
    ))
    return head if head_only else head + body


# frame_response is a pure function of what it is given, and an app answers with few
# distinct heads: each is framed once (with a placeholder for the Date, which changes
# every second) and reused. Bounded, as the keys can hold request data.
MAX_CACHED_HEADS = 512
_DATE_MARK = b"\x00date\x00"  # NUL can never be in a field value: no app header can hold it
_heads: dict[tuple, tuple[bytes, bytes | None, int | None, BodyWriter, bool]] = {}


def head_parts(request: Request, status: int, reason: bytes,
                 headers: list[tuple[bytes, bytes]], persistent: bool
                 ) -> tuple[bytes, bytes | None, int | None, BodyWriter, bool]:
    """framed_head's work, memoized: (head before the Date, head after it or None,
    Content-Length or None, shared writer, persistent after).

    Raises TypeError for something unhashable, and whatever frame_response raises.
    """
    key = (request.method, request.http_version, status, reason, tuple(headers), persistent)
    cached = _heads.get(key)
    if cached is None:
        head, writer, persistent_after = frame_response(
            request, status, reason, headers, persistent=persistent, date=_DATE_MARK)
        before, mark, after = head.partition(_DATE_MARK)
        length = writer.remaining if isinstance(writer, ContentLengthWriter) else None
        # A stateless writer (no body, chunked, close-delimited) is shared; a length counts down.
        cached = (before, after if mark else None, length, writer, persistent_after)
        if len(_heads) >= MAX_CACHED_HEADS:
            _heads.clear()
        _heads[key] = cached
    return cached


def framed_head(request: Request, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                persistent: bool, date_cache: DateCache) -> tuple[bytes, BodyWriter, bool]:
    """frame_response's (head, writer, persistent) for these inputs, memoized."""
    try:
        before, after, length, writer, persistent_after = head_parts(
            request, status, reason, headers, persistent)
    except TypeError:  # something unhashable: frame_response names the mistake
        return frame_response(request, status, reason, headers, persistent=persistent,
                              date=date_cache.current())
    head = before if after is None else before + date_cache.current() + after
    if length is not None:
        writer = ContentLengthWriter(length)
    return head, writer, persistent_after
