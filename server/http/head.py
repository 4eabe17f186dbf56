"""A request head (request line and field lines) to a Request event, limits first.

Checks run in a fixed order so that the verdict never depends on how the bytes
were split: size limits (414, 431) first, because an incomplete head can only be
judged by them (``check_incomplete_head``); then line endings, the request line
(400, 505), its target form, field syntax, and framing (framing.py).
"""

from __future__ import annotations

from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.events import Request
from polycorn.server.http.framing import decide_framing
from polycorn.server.http.grammar import absolute_form_re, authority_form_re, request_line_re
from polycorn.server.http.headers import parse_field_section
from polycorn.server.http.limits import Limits
from polycorn.server.http.receivebuffer import ReceiveBuffer

_VERSIONS = {b"HTTP/1.1": b"1.1", b"HTTP/1.0": b"1.0"}


def parse_request_head(head: bytes, limits: Limits) -> Request:
    """Parse a head ending at its empty line (as ReceiveBuffer.extract_head returns it)."""
    line_count = head.count(b"\n")  # request line, field lines, empty line
    request_line_end = head.find(b"\n")
    _check_limits(head, line_count, request_line_end, limits)
    # RFC 9112 2.2: a bare CR, or a bare LF as line terminator, is refused (400): a
    # lenient parser behind or in front of us could split lines differently.
    if head.count(b"\r\n") != line_count or head.count(b"\r") != line_count:
        raise RemoteProtocolError("bare CR or LF in the request head (lines must end in CRLF)")
    match = request_line_re.fullmatch(head, 0, request_line_end - 1)
    if match is None:
        raise RemoteProtocolError("malformed request line")
    method, target, version = match.groups()
    http_version = _VERSIONS.get(version)
    if http_version is None:
        raise RemoteProtocolError("unsupported HTTP version", 505)
    _check_target_form(method, target)
    section = head[request_line_end + 1 : -2]
    fields = parse_field_section(section, limits.permit_obsolete_folding)
    framing = decide_framing(http_version, fields)
    return Request(method, target, http_version, tuple(fields), *framing)


def _check_limits(head: bytes, line_count: int, request_line_end: int, limits: Limits) -> None:
    # A line is no longer than the whole head: the common small head skips the scans.
    max_line = limits.max_request_line
    if max_line and len(head) > max_line:
        if _line_length(head[:request_line_end]) > max_line:
            raise RemoteProtocolError("request line too long", 414)
    if line_count - 2 > limits.header_count:
        raise RemoteProtocolError("too many header fields", 431)
    max_size = limits.max_header_size
    if max_size and len(head) > max_size:
        field_lines = head[request_line_end + 1 :].split(b"\n")[:-2]
        if any(_line_length(line) > max_size for line in field_lines):
            raise RemoteProtocolError("header field too large", 431)


def _line_length(line: bytes) -> int:
    """A line's length without its CR (lines here were split on LF)."""
    return len(line) - line.endswith(b"\r")


def check_incomplete_head(buf: ReceiveBuffer, limits: Limits) -> None:
    """Raise 414/431 as soon as the head received so far must exceed a limit.

    Gives the verdict _check_limits would give on the complete head, however the
    bytes were split, and so bounds the memory a slow or endless head can take
    (to about max_header_count * max_header_size when both are set).
    """
    max_line = limits.max_request_line
    first = buf.first_newline
    if first < 0:
        if max_line and len(buf) - buf.ends_with_cr() > max_line:
            raise RemoteProtocolError("request line too long", 414)
        return
    if max_line and first - (buf.byte_before(first) == 0x0D) > max_line:
        raise RemoteProtocolError("request line too long", 414)
    if buf.newline_count - 1 > limits.header_count:
        raise RemoteProtocolError("too many header fields", 431)
    max_size = limits.max_header_size
    if max_size:
        partial = len(buf) - buf.last_newline - 1 - buf.ends_with_cr()
        if buf.longest_field_line > max_size or partial > max_size:
            raise RemoteProtocolError("header field too large", 431)


def _check_target_form(method: bytes, target: bytes) -> None:
    # RFC 9112 3.2: the four forms of request-target and the methods they belong to.
    if method == b"CONNECT":
        if not authority_form_re.fullmatch(target):
            raise RemoteProtocolError("CONNECT needs an authority-form target (RFC 9112 3.2.3)")
        return
    if target[0] == 0x2F:  # "/": origin-form
        if b"#" in target:
            raise RemoteProtocolError("fragment in request target (RFC 9112 3.2.1)")
        return
    if target == b"*":
        if method != b"OPTIONS":
            raise RemoteProtocolError("asterisk-form is for OPTIONS only (RFC 9112 3.2.4)")
        return
    if not absolute_form_re.fullmatch(target):
        raise RemoteProtocolError("invalid request target (RFC 9112 3.2)")
