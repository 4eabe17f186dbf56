"""FastConnection (llhttp) against ServerConnection (pure): the same verdict on every input.

AccelConnection (FastConnection with the compiled split_head) runs every parity test
too, as a second `fast` class, when the extension is built.

The whole request corpus runs through both under the corpus test's chunkings;
random bytes and generated requests are compared too, and responses must be the
same bytes. A last group checks that plain requests really take the llhttp path
and that what it leaves alone is handed over, so the parity is not trivial.
Pure functions only: no sockets.
"""

from __future__ import annotations

import random

import pytest
from corpus import Invalid, Valid
from corpus.invalid import CASES as INVALID
from corpus.valid import CASES as VALID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polycorn.server import accel
from polycorn.server.http.connection import Limits, ServerConnection
from polycorn.server.http.errors import LocalProtocolError, RemoteProtocolError
from polycorn.server.http.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Request,
)
from polycorn.server.http.fast import FastConnection
from polycorn.server.http.httpdate import DateCache

if accel.split_head is not None:
    from polycorn.server.http.accel_connection import AccelConnection
    from polycorn.server.http.accel_server import AccelServerConnection
else:
    AccelConnection = AccelServerConnection = None
_NOT_BUILT = pytest.mark.skipif(AccelConnection is None,
                                reason=f"no compiled accelerator: {accel.describe()}")
# The drop-in classes held to ServerConnection's verdicts.
FAST = [FastConnection,
        pytest.param(AccelConnection, id="AccelConnection", marks=_NOT_BUILT),
        pytest.param(AccelServerConnection, id="AccelServerConnection", marks=_NOT_BUILT)]

PIPELINED = b"GET /second HTTP/1.1\r\nHost: example.com\r\n\r\n"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PINNED_DATE = DateCache(clock=lambda: 0.0)


def chunkings(raw: bytes, name: str) -> dict[str, list[bytes]]:
    rng = random.Random(name)
    out = {"whole": [raw], "bytewise": [raw[i:i + 1] for i in range(len(raw))]}
    for i in range(3):
        cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 12))))
        out[f"random{i}"] = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    return out


def run(conn_class, chunks: list[bytes], eof: bool, limits: Limits) -> tuple[list, int | None]:
    """Feed chunks as a worker would (answering each request); events (body merged) and status."""
    conn = conn_class(limits, date_cache=PINNED_DATE)
    events: list = []
    try:
        for chunk in [*[c for c in chunks if c], *([b""] if eof else [])]:
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                if event is PAUSED:
                    conn.start_response(200, b"OK", [(b"Content-Length", b"0")])
                    conn.end_response()
                    if not conn.keep_alive:
                        return merge(events), None
                    conn.start_next_cycle()
                    continue
                events.append(event)
                if isinstance(event, ConnectionClosed):
                    return merge(events), None
    except RemoteProtocolError as exc:
        # Dead for good, as the pure connection is: the same error again, nothing parsed.
        conn.receive_data(PIPELINED)
        with pytest.raises(RemoteProtocolError) as again:
            conn.next_event()
        assert again.value.status == exc.status
        assert not conn.keep_alive
        return merge(events), exc.status
    return merge(events), None


def merge(events: list) -> list:
    merged: list = []
    for event in events:
        if isinstance(event, Data) and merged and isinstance(merged[-1], Data):
            merged[-1] = Data(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


def expected_events(case: Valid) -> list:
    body = [Data(case.body)] if case.body else []
    return [case.request, *body, EndOfMessage(case.trailers)]


# --- the corpus ---------------------------------------------------------------------

@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
@pytest.mark.parametrize("fast", FAST)
def test_valid_corpus_same_events_every_chunking(fast, case: Valid) -> None:
    for mode, chunks in chunkings(case.raw, case.name).items():
        got = run(fast, chunks, False, case.limits)
        assert got == (expected_events(case), None), mode
        assert got == run(ServerConnection, chunks, False, case.limits), mode


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
@pytest.mark.parametrize("fast", FAST)
def test_valid_corpus_then_pipelined(fast, case: Valid) -> None:
    raw = case.raw + PIPELINED
    for mode, chunks in chunkings(raw, case.name + "/pipelined").items():
        got = run(fast, chunks, True, case.limits)
        assert got == run(ServerConnection, chunks, True, case.limits), mode
        events, status = got
        assert status is None and events[:len(expected_events(case))] == expected_events(case)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.name)
@pytest.mark.parametrize("fast", FAST)
def test_invalid_corpus_same_status_every_chunking(fast, case: Invalid) -> None:
    for mode, chunks in chunkings(case.raw, case.name).items():
        got = run(fast, chunks, case.eof, case.limits)
        assert got[1] == case.status, mode
        assert got == run(ServerConnection, chunks, case.eof, case.limits), mode


@pytest.mark.parametrize("case", [c for c in INVALID if not c.eof], ids=lambda c: c.name)
@pytest.mark.parametrize("fast", FAST)
def test_invalid_corpus_then_pipelined(fast, case: Invalid) -> None:
    for mode, chunks in chunkings(case.raw + PIPELINED, case.name + "/pipelined").items():
        got = run(fast, chunks, False, case.limits)
        assert got[1] == case.status, mode
        assert got == run(ServerConnection, chunks, False, case.limits), mode


# --- differential fuzzing --------------------------------------------------------------

FRAGMENTS = [
    b"GET", b"POST", b"HEAD", b"PURGE", b"get", b"CONNECT", b" ", b"  ", b"\t", b"/", b"/a?b=c",
    b"*", b"#", b"http://h/p", b"h:80", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0",
    b"\r\n", b"\r\n\r\n", b"\n", b"\r", b"Host: h", b"Host:", b"Host : h", b"Content-Length: ",
    b"Content-Length: 3", b"Content-Length: 0", b"Transfer-Encoding: chunked",
    b"Connection: close", b"Connection: keep-alive", b"Connection: upgrade", b"Upgrade: x",
    b"Expect: 100-continue", b"Expect: x", b"X-A: b", b" folded", b":", b",", b"0", b"3",
    b"abc", b"\x00", b"\x7f", b"\xff", b"1" * 20,
]
fuzz_bytes = st.one_of(st.binary(max_size=200),
                       st.lists(st.sampled_from(FRAGMENTS), max_size=50).map(b"".join))
fuzz_limits = st.one_of(
    st.just(Limits()),
    st.builds(Limits, max_request_line=st.integers(0, 40), max_header_count=st.integers(0, 4),
              max_header_size=st.integers(0, 40), permit_obsolete_folding=st.booleans()),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@pytest.mark.parametrize("fast", FAST)
@FUZZ
@given(data=fuzz_bytes, cuts=st.lists(st.integers(0, 300), max_size=6), eof=st.booleans(),
       limits=fuzz_limits)
def test_any_bytes_same_outcome(fast, data, cuts, eof, limits) -> None:
    chunks = split(data, cuts)
    assert run(fast, chunks, eof, limits) == run(ServerConnection, chunks, eof, limits)


# --- responses ----------------------------------------------------------------------------

RESPONSES = [
    (b"GET", b"1.1", 200, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")], [b"hello"]),
    (b"GET", b"1.1", 200, [(b"Content-Type", b"text/plain")], [b"a", b"", b"bc"]),
    (b"GET", b"1.0", 200, [(b"Content-Type", b"text/plain")], [b"abc"]),
    (b"HEAD", b"1.1", 200, [(b"Content-Length", b"5")], [b"hello"]),
    (b"GET", b"1.1", 204, [], []),
    (b"GET", b"1.1", 304, [(b"ETag", b'"x"')], []),
    (b"GET", b"1.1", 200, [(b"Connection", b"close"), (b"Content-Length", b"0")], []),
    (b"GET", b"1.1", 200, [(b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT"), (b"Server", b"app")], [b"x"]),
    (b"GET", b"1.1", 200, [(b"Transfer-Encoding", b"chunked")], [b"x" * 100]),
]


def respond(conn_class, method: bytes, version: bytes, status: int, headers, chunks) -> bytes:
    conn = conn_class(date_cache=PINNED_DATE)
    conn.receive_data(b"%s / HTTP/%s\r\nHost: h\r\n\r\n" % (method, version))
    while conn.next_event() is not PAUSED:
        pass
    out = conn.start_response(status, b"Whatever", headers)
    for chunk in chunks:
        out += conn.send_body(chunk)
    return out + conn.end_response() + b"|keep-alive=%d" % conn.keep_alive


@pytest.mark.parametrize("response", RESPONSES, ids=lambda r: f"{r[0].decode()}-{r[2]}")
@pytest.mark.parametrize("fast", FAST)
def test_responses_are_the_same_bytes(fast, response) -> None:
    assert respond(fast, *response) == respond(ServerConnection, *response)


def test_errors_and_misuse_match() -> None:
    for conn_class in (FastConnection, ServerConnection):
        conn = conn_class(date_cache=PINNED_DATE)
        with pytest.raises(LocalProtocolError):
            conn.start_response(200, b"OK", [])
        assert conn.error_response(408).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert not conn.keep_alive
    short = []
    for conn_class in (FastConnection, ServerConnection):
        conn = conn_class(date_cache=PINNED_DATE)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        conn.next_event(), conn.next_event()
        conn.start_response(200, b"OK", [(b"Content-Length", b"4")])
        conn.send_body(b"ab")
        with pytest.raises(LocalProtocolError):
            conn.end_response()
        short.append(conn.keep_alive)
    assert short == [False, False]


def test_continue_bytes_once() -> None:
    for conn_class in (FastConnection, ServerConnection):
        conn = conn_class()
        conn.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                          b"Content-Length: 2\r\n\r\n")
        assert isinstance(conn.next_event(), Request)
        assert conn.continue_bytes() == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert conn.continue_bytes() == b""


# --- the fast path is really taken ----------------------------------------------------------

BROWSER = (b"GET /some/path?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0\r\n"
           b"Accept: text/html\r\nAccept-Encoding: gzip, br\r\nCookie: a=b; c=d\r\n"
           b"Connection: keep-alive\r\n\r\n")


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    BROWSER,
    b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: " + b"p" * 5000 + b"\r\n\r\n",
], ids=["wrk", "browser", "post", "http10", "large-head"])
def test_plain_requests_stay_on_llhttp(raw: bytes) -> None:
    conn = FastConnection()
    for _ in range(3):  # keep-alive cycles on one connection
        conn.receive_data(raw)
        while conn.next_event() is not PAUSED:
            pass
        conn.start_response(200, b"OK", [(b"Content-Length", b"0")])
        conn.end_response()
        if not conn.keep_alive:
            break
        conn.start_next_cycle()
    assert conn.fallback_reason is None


def test_a_head_split_after_its_request_line_stays_on_llhttp() -> None:
    """The request line of an unfinished head is judged once, and a good one stays fast."""
    conn = FastConnection()
    for _ in range(2):
        for piece in (b"GET /a HTTP/1.1\r\n", b"Host: h\r\n", b"X-A: b\r\n", b"\r\n"):
            conn.receive_data(piece)
            event = conn.next_event()
        assert isinstance(event, Request) and event.target == b"/a"
        assert conn.next_event() == EndOfMessage()
        conn.start_response(200, b"OK", [(b"Content-Length", b"0")])
        conn.end_response()
        conn.start_next_cycle()
    assert conn.fallback_reason is None


@pytest.mark.parametrize(("raw", "reason"), [
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "chunked body"),
    (b"PURGEX / HTTP/1.1\r\nHost: h\r\n\r\n", "llhttp refused or upgrade"),
    (b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", "llhttp refused or upgrade"),
    (b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", "request-target form"),
    (b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", "bare CR/LF or a leading empty line"),
    (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", "request-line spacing"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n", "framing refused"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Type: a\r\nContent-Type: a\r\n\r\n",
     "framing refused"),
    (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", "llhttp refused or upgrade"),  # then served as 1.1
    (b"GET /\r\n", "request line"),  # an unfinished head whose request line is bad
])
def test_unusual_requests_are_handed_to_the_pure_parser(raw: bytes, reason: str) -> None:
    conn = FastConnection()
    conn.receive_data(raw)
    try:
        conn.next_event()
    except RemoteProtocolError:
        pass
    assert conn.fallback_reason == reason
