"""The HTTP/1.1 grammar (RFC 9110, RFC 9112) as byte regexes compiled once at import.

Each pattern is linear: no nested quantifier can backtrack over the same bytes,
so a hostile header of any length costs one pass (no ReDoS).
"""

from __future__ import annotations

import re

# RFC 9110 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "."
#                          / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
TCHAR = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]"
TOKEN = TCHAR + rb"+"

# RFC 9110 5.5: field-value = *( field-vchar / SP / HTAB ), field-vchar = VCHAR / obs-text.
# Every other control byte (NUL, CR, LF, DEL, ...) is refused; leading and trailing
# whitespace is stripped by the caller, which keeps this class free of backtracking.
FIELD_VALUE_CHARS = rb"[\t\x20-\x7e\x80-\xff]*"

token_re = re.compile(TOKEN)

# A whole field section, "name:value\r\n" repeated, validated by one C-level pass;
# anything it refuses (obs-fold, bad bytes, space before the colon) is diagnosed slowly.
field_section_re = re.compile(rb"(?:" + TOKEN + rb":" + FIELD_VALUE_CHARS + rb"\r\n)*")
field_line_re = re.compile(rb"(" + TOKEN + rb"):(" + FIELD_VALUE_CHARS + rb")\r\n")

# RFC 9112 3: request-line = method SP request-target SP HTTP-version. The target is
# any run of visible ASCII here; its form is checked separately (head.py).
request_line_re = re.compile(rb"(" + TOKEN + rb") ([\x21-\x7e]+) (HTTP/[0-9]\.[0-9])")

# RFC 9112 7.1.1: chunk = chunk-size [ chunk-ext ] CRLF, with
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ).
QUOTED_STRING = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
chunk_line_re = re.compile(
    rb"([0-9A-Fa-f]+)((?:[ \t]*;[ \t]*" + TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:" + TOKEN + rb"|" + QUOTED_STRING + rb"))?)*)\r\n"
)

# RFC 9110 7.2: Host = uri-host [ ":" port ]; RFC 3986 3.2.2 host = IP-literal / IPv4 / reg-name.
_REG_NAME_CHAR = rb"(?:[-A-Za-z0-9._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})"
_REG_NAME = _REG_NAME_CHAR + rb"*"
_IP_LITERAL = rb"\[[-A-Za-z0-9._~!$&'()*+,;=:]+\]"
HOST = rb"(?:" + _IP_LITERAL + rb"|" + _REG_NAME + rb")"
host_re = re.compile(HOST + rb"(?::[0-9]*)?")

# RFC 9112 3.2.3: authority-form = uri-host ":" port; a tunnel needs both a host and a
# port, so neither may be empty here.
authority_form_re = re.compile(rb"(?:" + _IP_LITERAL + rb"|" + _REG_NAME_CHAR + rb"+):[0-9]+")
# RFC 9112 3.2.2: absolute-form = absolute-URI. We are an origin server, so only an
# "http" or "https" URI (RFC 9110 4.2) can name one of our resources: its authority is a
# non-empty host (4.2.1: an empty one MUST be rejected) and an optional port, without
# userinfo (4.2.4: treat it as an error); then path-abempty and an optional query.
# Group 1 is the authority, group 2 the origin-form rest (empty for "http://h").
absolute_form_re = re.compile(
    rb"[Hh][Tt][Tt][Pp][Ss]?://((?:" + _IP_LITERAL + rb"|" + _REG_NAME_CHAR + rb"+)(?::[0-9]*)?)"
    rb"((?:/[^?#]*)?(?:\?[^#]*)?)"
)

# RFC 9110 5.6.1 lists: elements separated by commas with optional whitespace.
transfer_coding_re = re.compile(
    rb"(" + TOKEN + rb")((?:[ \t]*;[ \t]*" + TOKEN
    + rb"[ \t]*=[ \t]*(?:" + TOKEN + rb"|" + QUOTED_STRING + rb"))*)"
)

content_length_re = re.compile(rb"[0-9]{1,18}")  # 18 digits: below 2**63, far past any body

# Response side: the app's header names must all be tokens; checked on the names
# joined by LF in one pass (a name holding LF is caught by the head's CR/LF count).
token_lines_re = re.compile(TOKEN + rb"(?:\n" + TOKEN + rb")*")
