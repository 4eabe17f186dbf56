"""Field-line syntax (RFC 9110 5, RFC 9112 5): bytes of a field section to (name, value) pairs.

The common case is validated and split by two compiled regexes over the whole
section in C; only a section they refuse is walked line by line, to unfold
obs-fold when permitted or to name the exact fault. Names come out lower-cased,
values with their optional whitespace stripped.
"""

from __future__ import annotations

import re

from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.grammar import (
    FIELD_VALUE_CHARS,
    field_line_re,
    field_section_re,
    token_re,
)

Fields = list[tuple[bytes, bytes]]

_field_value_re = re.compile(FIELD_VALUE_CHARS)
_OWS = b" \t"


def parse_field_section(section: bytes, permit_obsolete_folding: bool) -> Fields:
    """Parse field lines, each ending in CRLF (the empty line that ends a head excluded).

    The caller has already refused bare CR and bare LF, so CRLF splits lines exactly.
    """
    if field_section_re.fullmatch(section):
        return [(name.lower(), value.strip(_OWS)) for name, value in field_line_re.findall(section)]
    return _parse_lines(section.split(b"\r\n")[:-1], permit_obsolete_folding)


def _parse_lines(lines: list[bytes], permit_obsolete_folding: bool) -> Fields:
    fields: Fields = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not fields:
                # RFC 9112 2.2: whitespace before the first field line could hide a
                # field from one parser and not another; reject.
                raise RemoteProtocolError("whitespace before the first header field")
            if not permit_obsolete_folding:
                raise RemoteProtocolError("obsolete line folding (RFC 9112 5.2)")
            _check_value(line)
            # RFC 9112 5.2: replace each obs-fold with SP before interpreting the value.
            name, value = fields[-1]
            fields[-1] = (name, (value + b" " + line.strip(_OWS)).strip(_OWS))
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            raise RemoteProtocolError("header line without a colon")
        if name[-1:] in (b" ", b"\t"):
            # RFC 9112 5.1: a server MUST reject whitespace between name and colon
            # (request smuggling: a proxy might read "Host " as a different field).
            raise RemoteProtocolError("whitespace between header name and colon")
        if not token_re.fullmatch(name):
            raise RemoteProtocolError("invalid header name")
        _check_value(value)
        fields.append((name.lower(), value.strip(_OWS)))
    return fields


def _check_value(value: bytes) -> None:
    if _field_value_re.fullmatch(value):
        return
    if b"\x00" in value:
        # RFC 9110 5.5: CR, LF and NUL in a value are invalid and dangerous.
        raise RemoteProtocolError("NUL in a header value")
    raise RemoteProtocolError("control character in a header value")


def split_list(values: list[bytes]) -> list[bytes]:
    """RFC 9110 5.6.1: the lower-cased non-empty members of comma-separated list fields."""
    members = []
    for value in values:
        for member in value.split(b","):
            member = member.strip(_OWS)
            if member:
                members.append(member.lower())
    return members
