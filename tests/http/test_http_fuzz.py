"""Property tests of the request parser: a fuzz invariant and a generate-parse round trip."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polycorn.server.http.connection import Limits, ServerConnection
from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Request,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces of HTTP/1.1, so that random sequences reach deep parser states, not just
# "malformed request line".
FRAGMENTS = [
    b"GET", b"POST", b"HEAD", b"OPTIONS", b"CONNECT", b" ", b"  ", b"\t", b"/", b"/a?b=c", b"*",
    b"http://h/p", b"h:80", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"\r\n", b"\r\n\r\n", b"\n",
    b"\r", b"Host: h", b"Host:", b"Content-Length: ", b"Content-Length: 3", b"Transfer-Encoding: ",
    b"chunked", b"gzip, chunked", b"Connection: close", b"Connection: keep-alive",
    b"Expect: 100-continue", b"Expect: x", b"X-A: b", b":", b";", b"=", b'"', b"\\", b",", b"0",
    b"3", b"5", b"a", b"ff", b"-1", b"1" * 20, b"abc", b"\x00", b"\x7f", b"\xff", b"\x1b", b"#",
]

fuzz_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(FRAGMENTS), max_size=60).map(b"".join),
)
fuzz_limits = st.one_of(
    st.just(Limits()),
    st.builds(Limits, max_request_line=st.integers(0, 40), max_header_count=st.integers(0, 4),
              max_header_size=st.integers(0, 40), permit_obsolete_folding=st.booleans(),
              max_chunk_size_digits=st.integers(1, 4), max_chunk_ext_size=st.integers(0, 10)),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def run_connection(chunks: list[bytes], eof: bool, limits: Limits, events: list) -> None:
    """Feed chunks, answering every request as a worker would; collect the events."""
    conn = ServerConnection(limits)
    chunks = [chunk for chunk in chunks if chunk]  # b"" would mean EOF
    for chunk in [*chunks, b""] if eof else chunks:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if event is PAUSED:
                conn.start_response(200, b"OK", [(b"Content-Length", b"0")])
                conn.end_response()
                if not conn.keep_alive:
                    return
                conn.start_next_cycle()
                continue
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return


def outcome(chunks: list[bytes], eof: bool, limits: Limits) -> tuple[list, int | None]:
    """The events (body pieces merged) and the status of the error that ended them, if any."""
    events: list = []
    try:
        run_connection(chunks, eof, limits, events)
    except RemoteProtocolError as exc:
        assert 400 <= exc.status <= 599
        return merge_data(events), exc.status
    return merge_data(events), None


@FUZZ
@given(data=fuzz_bytes, cuts=st.lists(st.integers(0, 400), max_size=8), eof=st.booleans(),
       limits=fuzz_limits)
def test_any_bytes_parse_or_raise_remote_protocol_error(data, cuts, eof, limits) -> None:
    """Any bytes, split anywhere: events or RemoteProtocolError; never any other exception."""
    # And the split never changes the verdict: the same events, the same status.
    assert outcome(split(data, cuts), eof, limits) == outcome([data], eof, limits)


def merge_data(events: list) -> list:
    merged: list = []
    for event in events:
        if isinstance(event, Data) and merged and isinstance(merged[-1], Data):
            merged[-1] = Data(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


# --- round trip: generated valid requests parse back to what was generated ----------------

TCHARS = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters
SPECIAL = {"host", "content-length", "transfer-encoding", "connection", "expect"}
TARGET_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "#")
VALUE_CHARS = st.sampled_from([bytes([c]) for c in [*range(0x21, 0x7F), *range(0x80, 0x100)]]
                              + [b" ", b"\t"])

tokens = st.text(TCHARS, min_size=1, max_size=12).map(str.encode)
field_names = tokens.filter(lambda n: n.lower().decode() not in SPECIAL)
field_values = st.lists(VALUE_CHARS, max_size=30).map(b"".join)
ows = st.sampled_from([b"", b" ", b"\t", b"  \t"])


@st.composite
def requests(draw):
    version = draw(st.sampled_from([b"1.1", b"1.0"]))
    method = draw(tokens.filter(lambda m: m != b"CONNECT"))
    target = b"/" + draw(st.text(TARGET_CHARS, max_size=40)).encode()
    wire_fields: list[tuple[bytes, bytes]] = []  # as sent (any case, with OWS)
    expected: list[tuple[bytes, bytes]] = []  # as parsed

    def add(name: bytes, value: bytes) -> None:
        wire_fields.append((name, draw(ows) + value + draw(ows)))
        expected.append((name.lower(), value.strip(b" \t")))

    if version == b"1.1" or draw(st.booleans()):
        add(draw(st.sampled_from([b"Host", b"host", b"HOST"])), b"example.com:8080")
    for name, value in draw(st.lists(st.tuples(field_names, field_values), max_size=8)):
        add(name, value)
    keep_alive = version == b"1.1"
    if draw(st.booleans()):
        keep_alive = not keep_alive
        add(b"Connection", b"keep-alive" if keep_alive else b"close")
    framing = draw(st.sampled_from(["none", "length", "chunked"] if version == b"1.1"
                                   else ["none", "length"]))
    pieces = draw(st.lists(st.binary(min_size=1, max_size=50), max_size=5))
    body = b"".join(pieces)
    trailers: list[tuple[bytes, bytes]] = []
    content_length = None
    if framing == "length":
        content_length = len(body)
        add(b"Content-Length", b"%d" % content_length)
        wire_body = body
    elif framing == "chunked":
        add(b"Transfer-Encoding", b"chunked")
        wire_body = b""
        for piece in pieces:
            extension = draw(st.sampled_from([b"", b";a", b";a=b", b' ; n="q;\\"v"']))
            wire_body += b"%x%s\r\n%s\r\n" % (len(piece), extension, piece)
        trailer_fields = draw(st.lists(st.tuples(field_names, field_values), max_size=3))
        wire_body += b"0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in trailer_fields)
        wire_body += b"\r\n"
        trailers = [(n.lower(), v.strip(b" \t")) for n, v in trailer_fields]
    else:
        body = b""
        wire_body = b""
    raw = (method + b" " + target + b" HTTP/" + version + b"\r\n"
           + b"".join(n + b":" + v + b"\r\n" for n, v in wire_fields) + b"\r\n" + wire_body)
    request = Request(method, target, version, tuple(expected), content_length,
                      framing == "chunked", keep_alive, False)
    return raw, request, body, tuple(trailers)


@FUZZ
@given(case=requests(), cuts=st.lists(st.integers(0, 2000), max_size=10))
def test_generated_requests_parse_back(case, cuts) -> None:
    raw, request, body, trailers = case
    conn = ServerConnection()
    events: list = []
    for chunk in split(raw, cuts):
        conn.receive_data(chunk)
        while (event := conn.next_event()) not in (NEED_DATA, PAUSED):
            events.append(event)
    assert events[0] == request
    assert events[-1] == EndOfMessage(trailers)
    assert b"".join(e.data for e in events[1:-1]) == body
    assert conn.next_event() is PAUSED
