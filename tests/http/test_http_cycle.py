"""One response half for both connection classes (cycle.py), its moves read from state.py's tables.

ServerConnection and FastConnection differ only in their request half; when the
fast one hands a head to the pure parser (in place, mid-connection), the shared
response half must go on giving the pure connection's bytes and state.
"""

from __future__ import annotations

import pytest
from polycorn.server.http.connection import ServerConnection
from polycorn.server.http.cycle import ConnectionCycle
from polycorn.server.http.errors import LocalProtocolError
from polycorn.server.http.events import NEED_DATA, PAUSED, ConnectionClosed, Request
from polycorn.server.http.fast import FastConnection
from polycorn.server.http.httpdate import DateCache
from polycorn.server.http.state import (
    REQUEST_TRANSITIONS,
    RESPONSE_TRANSITIONS,
    RequestState,
    ResponseState,
    Step,
    only_move,
)

RESPONSE_HALF = ("continue_bytes", "start_response", "send_body", "end_response",
                 "respond_whole", "error_response", "refuse_keep_alive", "keep_alive",
                 "response_started", "start_next_cycle")


@pytest.mark.parametrize("conn_class", [ServerConnection, FastConnection])
def test_the_response_half_is_written_once(conn_class) -> None:
    assert issubclass(conn_class, ConnectionCycle)
    for name in RESPONSE_HALF:
        assert name in ConnectionCycle.__dict__, name
        owners = [k.__name__ for k in conn_class.__mro__ if name in k.__dict__]
        assert owners == ["ConnectionCycle"], (name, owners)


def test_only_move_reads_the_one_move_of_a_step() -> None:
    assert only_move(RESPONSE_TRANSITIONS, Step.HEAD) == (ResponseState.IDLE, ResponseState.BODY)
    assert only_move(REQUEST_TRANSITIONS, Step.NEXT_CYCLE) == (RequestState.DONE,
                                                                RequestState.IDLE)
    two_sources = {**RESPONSE_TRANSITIONS,
                   (ResponseState.DONE, Step.HEAD): ResponseState.BODY}
    with pytest.raises(ValueError, match="HEAD has 2 sources"):
        only_move(two_sources, Step.HEAD)


PLAIN = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
# Chunked: not llhttp's to judge, so FastConnection hands this head and all that
# follows to the pure parser, in the middle of the connection.
CHUNKED = (b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
           b"Expect: 100-continue\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
HEAD_10 = b"HEAD /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"


def transcript(conn_class, wire: bytes, answers) -> list:
    """Everything a worker sees and writes for ``wire`` (whole, then EOF), answering in turn."""
    conn = conn_class(date_cache=DateCache(clock=lambda: 0.0))
    seen: list = []
    answers = iter(answers)
    for data in (wire, b""):
        conn.receive_data(data)
        while (event := conn.next_event()) is not NEED_DATA:
            seen.append(event)
            if isinstance(event, Request):
                seen.append(conn.continue_bytes())
            if event is PAUSED:
                seen.append(next(answers)(conn))
                seen.append((conn.keep_alive, conn.response_started, conn.trailing_data))
                if not conn.keep_alive:
                    return seen
                conn.start_next_cycle()
            elif isinstance(event, ConnectionClosed):
                return seen
    return seen


ANSWERS = [
    lambda c: c.respond_whole(200, b"OK", [(b"Content-Length", b"2")], b"ok"),
    lambda c: c.respond_whole(200, b"OK", [(b"Content-Type", b"text/plain")], b"chunked"),
    lambda c: c.start_response(200, b"OK", [(b"Content-Length", b"4")])
    + c.send_body(b"head") + c.end_response(),
    lambda c: c.respond_whole(201, b"Created", [], b""),
]


def test_a_fall_back_mid_connection_keeps_the_pure_bytes_and_state() -> None:
    wire = PLAIN + CHUNKED + HEAD_10 + PLAIN
    fast = transcript(FastConnection, wire, ANSWERS)
    assert fast == transcript(ServerConnection, wire, ANSWERS)
    assert [e.target for e in fast if isinstance(e, Request)] == [b"/a", b"/b", b"/c", b"/a"]
    assert b"HTTP/1.1 100 Continue\r\n\r\n" in fast


def test_after_a_fall_back_the_response_half_still_guards_its_moves() -> None:
    for conn_class in (FastConnection, ServerConnection):
        conn = conn_class()
        conn.receive_data(CHUNKED)
        while conn.next_event() is not PAUSED:
            pass
        assert getattr(conn, "fallback_reason", "chunked body") == "chunked body"
        conn.respond_whole(200, b"OK", [(b"Content-Length", b"1")], b"x")
        with pytest.raises(LocalProtocolError, match="cannot send body while response complete"):
            conn.send_body(b"y")
        with pytest.raises(LocalProtocolError, match="response head built"):
            conn.start_response(200, b"OK", [])
        conn.start_next_cycle()
        with pytest.raises(LocalProtocolError, match="start the next request cycle"):
            conn.start_next_cycle()
