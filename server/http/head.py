"""A request head (request line and field lines) to a Request event, limits first.

Checks run in a fixed order so that the verdict never depends on how the bytes
were split, and each is given as soon as its bytes are in (``check_incomplete_head``
judges a head still arriving): the request line's length (414), then the request
line itself once its CRLF is in (400, 505, its target form), then the field limits
(431); with the whole head, line endings, field syntax and framing (framing.py).
The request line is judged at once because a client that sent a bad one (HTTP/0.9's
"GET /" sends nothing more) would otherwise wait for --timeout to hear nothing.
"""

from __future__ import annotations

from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.events import Request
from polycorn.server.http.framing import decide_framing
from polycorn.server.http.grammar import absolute_form_re, authority_form_re, request_line_re
from polycorn.server.http.headers import parse_field_section
from polycorn.server.http.limits import Limits
from polycorn.server.http.receivebuffer import ReceiveBuffer

# RFC 9110 2.5: a message of a higher minor version than we implement (HTTP/1.2 to
# HTTP/1.9) is processed as HTTP/1.1, and answered as HTTP/1.1 (all we ever send);
# another major version (HTTP/0.9, HTTP/2.0) is 505.
_VERSIONS = {b"HTTP/1.%d" % minor: b"1.1" for minor in range(1, 10)} | {b"HTTP/1.0": b"1.0"}


def parse_request_head(head: bytes, limits: Limits) -> Request:
    """Parse a head ending at its empty line (as ReceiveBuffer.extract_head returns it)."""
    line_count = head.count(b"\n")  # request line, field lines, empty line
    request_line_end = head.find(b"\n")
    # A line is no longer than the whole head: the common small head skips the scan.
    max_line = limits.max_request_line
    if max_line and len(head) > max_line:
        if _line_length(head[:request_line_end]) > max_line:
            raise RemoteProtocolError("request line too long", 414)
    method, target, http_version = parse_request_line(head, request_line_end)
    _check_field_limits(head, line_count, request_line_end, limits)
    # RFC 9112 2.2: a bare CR, or a bare LF as line terminator, is refused (400): a
    # lenient parser behind or in front of us could split lines differently.
    if head.count(b"\r\n") != line_count or head.count(b"\r") != line_count:
        raise RemoteProtocolError("bare CR or LF in the request head (lines must end in CRLF)")
    section = head[request_line_end + 1 : -2]
    fields = parse_field_section(section, limits.permit_obsolete_folding)
    framing = decide_framing(http_version, fields)
    return Request(method, target, http_version, tuple(fields), *framing)


def parse_request_line(data: bytes | bytearray, end: int) -> tuple[bytes, bytes, bytes]:
    """(method, target, version b"1.1"/b"1.0") of the request line ending at the LF at end.

    Raises RemoteProtocolError: 400 for a malformed line or target, 505 for another
    major version. ``data`` may hold more (the head, the receive buffer): nothing is copied.
    """
    # RFC 9112 2.2: a bare LF ends no line (a bare CR inside fails the match below).
    if end < 1 or data[end - 1] != 0x0D:
        raise RemoteProtocolError("bare LF after the request line (lines must end in CRLF)")
    match = request_line_re.fullmatch(data, 0, end - 1)
    if match is None:
        raise RemoteProtocolError("malformed request line")
    method, target, version = match.groups()
    http_version = _VERSIONS.get(version)
    if http_version is None:
        raise RemoteProtocolError("unsupported HTTP version", 505)
    _check_target_form(method, target)
    return method, target, http_version


def _check_field_limits(head: bytes, line_count: int, request_line_end: int,
                        limits: Limits) -> None:
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


def check_incomplete_head(buf: ReceiveBuffer, limits: Limits, line_judged: bool) -> bool:
    """Raise as soon as the head received so far must be refused; whether its request
    line is complete (and so has been judged: pass that back as line_judged).

    Gives the verdict parse_request_head would give on the complete head, however
    the bytes were split (414, the request line, 431, in its order), and so bounds
    the memory a slow or endless head can take (to about max_header_count *
    max_header_size when both are set). The request line is judged once.
    """
    max_line = limits.max_request_line
    first = buf.first_newline
    if first < 0:
        if max_line and len(buf) - buf.ends_with_cr() > max_line:
            raise RemoteProtocolError("request line too long", 414)
        return False
    if not line_judged:
        if max_line and first - (buf.byte_before(first) == 0x0D) > max_line:
            raise RemoteProtocolError("request line too long", 414)
        parse_request_line(buf.prefix(first), first)
    if buf.newline_count - 1 > limits.header_count:
        raise RemoteProtocolError("too many header fields", 431)
    max_size = limits.max_header_size
    if max_size:
        partial = len(buf) - buf.last_newline - 1 - buf.ends_with_cr()
        if buf.longest_field_line > max_size or partial > max_size:
            raise RemoteProtocolError("header field too large", 431)
    return True


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
