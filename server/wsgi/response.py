"""start_response, write() and wsgi.file_wrapper, per PEP 3333.

StartResponse validates what the app declares and keeps it as wire-ready bytes;
it never touches a socket. Body bytes given to write() go to a sink supplied by
the worker (or are buffered when there is none), and the first non-empty one
freezes the status: from then on only exc_info may replace it, by re-raising.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from polycorn.server import accel

# RFC 9112 section 4: status-code is 3DIGIT, reason-phrase is HTAB / SP / VCHAR /
# obs-text; PEP 3333 separates them with one space.
_STATUS = re.compile(r"([1-9][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?")
# RFC 9110 section 5.1 (field-name is a token) and 5.5 (field-value characters):
# refusing CR and LF here is what prevents response splitting.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# PEP 3333 forbids hop-by-hop headers from the app (RFC 2616 13.5.1's list, which
# wsgiref.util.is_hop_by_hop uses); they describe our connection, which is ours to
# frame. Dropped rather than refused, as Gunicorn does, so existing apps keep working.
# Connection and Transfer-Encoding go on to ServerConnection, which honours
# "Connection: close" and drops both from the head.
_HOP_BY_HOP = frozenset({
    "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers", "upgrade",
})

# An app uses a handful of status lines: each is parsed once (bounded, like names).
_KNOWN_STATUSES: dict[str, tuple[int, bytes]] = {}
_PAIR_TYPES = (tuple, list)
_TEXT_TYPES = (str, bytes)
# Header names an app uses are few: each is validated once, then mapped straight to
# its kind and wire bytes (bounded, as names can come from request data).
_MAX_KNOWN_NAMES = 512
_ORDINARY, _DROPPED, _CONTENT_LENGTH = 0, 1, 2
_KNOWN_NAMES: dict[str, tuple[int, bytes]] = {}
# An app answers with few distinct header lists: a list equal to one already
# validated skips the validation (kept, wire form, Content-Length are reused). Only a
# list of plain (str, str) tuples is looked up, so a subclass never passes for the
# str or tuple it equals; bounded, as values can come from request data.
_MAX_KNOWN_HEADER_LISTS = 256
_KNOWN_HEADER_LISTS: dict[tuple, tuple[list, list, int | None]] = {}

# The compiled accelerator's version of the look-up (server/accel.py), or None.
_known_list = getattr(accel.native, "known_header_list", None)

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class FileWrapper:
    """wsgi.file_wrapper: iterates a file-like object in blocks.

    The worker recognises it and may send the file with os.sendfile instead of
    iterating, when the object has a real file descriptor.
    """

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if not data:
            raise StopIteration
        return data

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


class StartResponse:
    """The start_response callable of one app call, and what the app declared through it."""

    __slots__ = ("status", "status_code", "reason", "headers", "wire_headers",
                 "content_length", "headers_sent", "written", "_sink")

    def __init__(self, sink: Callable[[bytes], None] | None = None) -> None:
        # sink(data) puts a non-empty write() chunk on the wire (sending the head
        # first); without a sink, written chunks are kept in `written`.
        self._sink = sink
        self.status: str | None = None  # "200 OK", as the app gave it
        self.status_code = 0
        self.reason = b""
        self.headers: list[tuple[str, str]] = []  # as the app gave them, minus hop-by-hop
        self.wire_headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.headers_sent = False  # the status is frozen (a body byte was produced)
        self.written: list[bytes] = []

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: ExcInfo | None = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    # PEP 3333: too late to change the response; let the error end it.
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame <-> traceback cycle
        elif self.status is not None:
            raise AssertionError("start_response() called again without exc_info")
        known = _KNOWN_STATUSES.get(status) if type(status) is str else None
        if known is None:
            self._set_status(status)
        else:  # the fast path of _set_status, inlined (this runs on every request)
            self.status_code, self.reason = known
            self.status = status
        self._set_headers(headers)
        return self.write

    def _set_status(self, status: str) -> None:
        if type(status) is not str:
            raise TypeError(f"status must be a str, not {type(status).__name__}")
        self.status_code, self.reason = _KNOWN_STATUSES.get(status) or _learn_status(status)
        self.status = status

    def _set_headers(self, headers: list[tuple[str, str]]) -> None:
        key = None
        if type(headers) is list:
            if _known_list is not None:  # the compiled look-up below, in one call
                known = _known_list(headers, _KNOWN_HEADER_LISTS)
                if known is not None:
                    kept, wire, self.content_length = known
                    self.headers = kept.copy()
                    self.wire_headers = wire.copy()
                    return
            try:
                key = tuple(headers)
                known = _KNOWN_HEADER_LISTS.get(key)
            except TypeError:  # a list as an item: validated below, never remembered
                key = known = None
            if known is not None and _plain_pairs(headers):
                kept, wire, self.content_length = known
                self.headers = kept.copy()
                self.wire_headers = wire.copy()
                return
        # PEP 3333 asks for a list of tuples; like Gunicorn we take any sequence of
        # pairs, so an app that runs there runs here.
        if type(headers) is not list and (
                isinstance(headers, _TEXT_TYPES) or not hasattr(headers, "__iter__")):
            raise TypeError(f"headers must be a list, not {type(headers).__name__}")
        kept: list[tuple[str, str]] = []
        wire: list[tuple[bytes, bytes]] = []
        content_length = None
        for item in headers:
            if type(item) not in _PAIR_TYPES or len(item) != 2:
                raise TypeError(f"header {item!r} is not a (name, value) tuple")
            name, value = item
            if type(name) is not str or type(value) is not str:
                raise TypeError(f"header {item!r}: name and value must be str")
            kind, wire_name = _KNOWN_NAMES.get(name) or _learn_name(name)
            if kind == _DROPPED:
                continue
            value = value.strip(" \t")
            if kind == _CONTENT_LENGTH:
                if not (value.isascii() and value.isdigit()):
                    raise ValueError(f"invalid Content-Length {value!r}")
                content_length = int(value)
            kept.append((name, value))
            wire.append((wire_name, value))
        # Values are checked in bulk, one regex scan per response rather than one per
        # header (this runs on every request); the slow path then names the culprit.
        if _FIELD_VALUE.fullmatch("".join([value for _, value in kept])) is None:
            _raise_invalid_value(kept)
        self.headers = kept
        self.wire_headers = [(name, value.encode("latin-1")) for name, value in wire]
        self.content_length = content_length
        if key is not None and len(_KNOWN_HEADER_LISTS) < _MAX_KNOWN_HEADER_LISTS:
            _KNOWN_HEADER_LISTS[key] = (kept.copy(), self.wire_headers.copy(), content_length)

    def write(self, data: bytes) -> None:
        """PEP 3333's write(): the imperative API for old apps; sends at once."""
        if self.status is None:
            raise AssertionError("write() called before start_response()")
        if type(data) is not bytes:
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        if not data:
            return
        self.headers_sent = True
        if self._sink is not None:
            self._sink(data)
        else:
            self.written.append(data)


def _plain_pairs(headers: list) -> bool:
    for item in headers:
        if type(item) is not tuple or type(item[0]) is not str or type(item[1]) is not str:
            return False
    return True


def _learn_status(status: str) -> tuple[int, bytes]:
    match = _STATUS.fullmatch(status)
    if match is None:
        raise ValueError(f"invalid status {status!r} (expected like '200 OK')")
    code = int(match.group(1))
    if code < 200:
        # RFC 9110 section 15.2: a 1xx is interim; the app must give a final status.
        raise ValueError(f"status {status!r} is informational, not a final response")
    known = (code, (match.group(2) or "").encode("latin-1"))
    if len(_KNOWN_STATUSES) < _MAX_KNOWN_NAMES:
        _KNOWN_STATUSES[status] = known
    return known


def _learn_name(name: str) -> tuple[int, bytes]:
    """Validate a header name: its kind and wire bytes."""
    if _TOKEN.fullmatch(name) is None:
        raise ValueError(f"invalid header name {name!r}")
    lowered = name.lower()
    kind = (_DROPPED if lowered in _HOP_BY_HOP
            else _CONTENT_LENGTH if lowered == "content-length" else _ORDINARY)
    known = (kind, name.encode("ascii"))
    if len(_KNOWN_NAMES) < _MAX_KNOWN_NAMES:
        _KNOWN_NAMES[name] = known
    return known


def _raise_invalid_value(headers: list[tuple[str, str]]) -> None:
    for name, value in headers:
        if _FIELD_VALUE.fullmatch(value) is None:
            # The name only: the value may hold a secret, and it is invalid anyway.
            raise ValueError(f"invalid characters in the value of header {name!r}")
