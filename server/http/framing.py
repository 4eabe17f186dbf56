"""What a request's header fields decide: body framing, Host, persistence, expectations.

Strategy: one pass picks out the few fields that matter (Host, Content-Length,
Transfer-Encoding, Connection, Expect, and Content-Type, which may not repeat);
each is then judged by its RFC rule.
Anything ambiguous is refused rather than guessed, because a front proxy that
guessed differently is how request smuggling happens (RFC 9112 11.2).
"""

from __future__ import annotations

from typing import NamedTuple

from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.grammar import content_length_re, host_re, transfer_coding_re
from polycorn.server.http.headers import Fields, split_list

_SELECTED = frozenset((b"host", b"content-length", b"transfer-encoding", b"connection",
                       b"expect", b"content-type"))


class RequestFraming(NamedTuple):
    content_length: int | None  # None when chunked or bodiless
    chunked: bool
    keep_alive: bool  # what the client asked for
    expect_continue: bool


def decide_framing(http_version: bytes, fields: Fields) -> RequestFraming:
    hosts: list[bytes] = []
    lengths: list[bytes] = []
    codings: list[bytes] = []
    connection: list[bytes] = []
    expect: list[bytes] = []
    content_types = 0
    for name, value in [field for field in fields if field[0] in _SELECTED]:
        if name == b"host":
            hosts.append(value)
        elif name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            codings.append(value)
        elif name == b"connection":
            connection.append(value)
        elif name == b"expect":
            expect.append(value)
        else:
            content_types += 1
    if content_types > 1:
        # RFC 9110 5.3: Content-Type (8.3) holds one media type, so two field lines
        # cannot be combined; the app and a proxy could each pick another. Refused, as
        # Gunicorn does (repeated Host and Content-Length are refused below).
        raise RemoteProtocolError("more than one Content-Type")
    is_11 = http_version == b"1.1"
    _check_host(hosts, is_11)
    if codings:
        chunked, content_length = _check_transfer_coding(codings, lengths, is_11), None
    else:
        chunked, content_length = False, _parse_content_length(lengths)
    return RequestFraming(
        content_length,
        chunked,
        _keep_alive(connection, is_11),
        _expects_continue(expect) if is_11 else False,
    )


def _check_host(hosts: list[bytes], is_11: bool) -> None:
    # RFC 9112 3.2: 400 for an HTTP/1.1 request without Host, for more than one
    # Host field line, or for a Host with an invalid value.
    if not hosts:
        if is_11:
            raise RemoteProtocolError("HTTP/1.1 request without a Host header")
        return
    if len(hosts) > 1:
        raise RemoteProtocolError("more than one Host header")
    if not host_re.fullmatch(hosts[0]):
        raise RemoteProtocolError("invalid Host header value")


def _check_transfer_coding(codings: list[bytes], lengths: list[bytes], is_11: bool) -> bool:
    if not is_11:
        # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
        raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 request")
    if lengths:
        # RFC 9112 6.1 allows ignoring Content-Length here, but a proxy in front may
        # have used it: the two framings disagree, which is the smuggling pattern.
        raise RemoteProtocolError("both Transfer-Encoding and Content-Length")
    members = split_list(codings)
    if not members:
        raise RemoteProtocolError("empty Transfer-Encoding")
    for member in members:
        if not transfer_coding_re.fullmatch(member):
            raise RemoteProtocolError("invalid transfer coding")
    if members.count(b"chunked") > 1:
        raise RemoteProtocolError("chunked applied more than once (RFC 9112 7)")
    if members[-1] != b"chunked":
        # RFC 9112 6.3 (4): without chunked last the body length is unknowable.
        raise RemoteProtocolError("final transfer coding is not chunked")
    if len(members) > 1:
        # RFC 9112 6.1: 501 for a coding we do not implement (we decode only chunked).
        raise RemoteProtocolError("unsupported transfer coding", 501)
    return True


def _parse_content_length(lengths: list[bytes]) -> int | None:
    if not lengths:
        return None
    if len(lengths) > 1:
        # RFC 9110 8.6 lets a recipient accept repeated identical values; we refuse
        # every repetition: one rule is simpler to audit and no proxy disagrees with it.
        raise RemoteProtocolError("more than one Content-Length")
    value = lengths[0]
    if not content_length_re.fullmatch(value):
        # Digits only (no sign, no inner space, no comma list), at most 18 of them.
        raise RemoteProtocolError("invalid Content-Length")
    return int(value)


def _keep_alive(connection: list[bytes], is_11: bool) -> bool:
    # RFC 9112 9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only on "keep-alive".
    if not connection:
        return is_11
    options = split_list(connection)
    if b"close" in options:
        return False
    return is_11 or b"keep-alive" in options


def _expects_continue(expect: list[bytes]) -> bool:
    # RFC 9110 10.1.1: 100-continue is the only expectation defined; any other is 417.
    # (An HTTP/1.0 request's Expect is ignored by the caller, as that section requires.)
    if not expect:
        return False
    members = split_list(expect)
    if any(member != b"100-continue" for member in members):
        raise RemoteProtocolError("unsupported expectation", 417)
    return bool(members)
