"""ServerConnection's request cycle: pipelining, PAUSED, keep-alive, EOF, 100-continue, errors.

Driven by bytes alone; each test states the rule of docs/internals.md it holds.
"""

from __future__ import annotations

import pytest
from polycorn.server.http import receivebuffer
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

GET = b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n"
POST5 = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
EXPECTING = b"PUT /p HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"


def events_until_pause(conn: ServerConnection) -> list:
    out = []
    while (event := conn.next_event()) not in (NEED_DATA, PAUSED):
        out.append(event)
    return out


def respond(conn: ServerConnection, body: bytes = b"ok") -> bytes:
    wire = conn.start_response(200, b"OK", [(b"Content-Length", b"%d" % len(body))])
    return wire + conn.send_body(body) + conn.end_response()


def test_empty_connection_needs_data() -> None:
    conn = ServerConnection()
    assert conn.next_event() is NEED_DATA
    assert conn.trailing_data == (b"", False)
    assert conn.keep_alive


def test_pipelined_requests_wait_until_next_cycle() -> None:
    conn = ServerConnection()
    conn.receive_data(GET % 1 + GET % 2 + GET % 3)
    first = events_until_pause(conn)
    assert [e.target for e in first if isinstance(e, Request)] == [b"/1"]
    # PAUSED however often asked and even once the response is done.
    assert conn.next_event() is PAUSED
    respond(conn)
    assert conn.next_event() is PAUSED
    assert conn.trailing_data == (GET % 2 + GET % 3, False)
    for n in (2, 3):
        conn.start_next_cycle()
        assert events_until_pause(conn) == [
            Request(b"GET", b"/%d" % n, b"1.1", ((b"host", b"a"),)), EndOfMessage()]
        respond(conn)
    conn.start_next_cycle()
    assert conn.next_event() is NEED_DATA


def test_many_cycles_on_one_connection() -> None:
    conn = ServerConnection()
    for _ in range(200):
        conn.receive_data(POST5)
        assert events_until_pause(conn)[1:] == [Data(b"hello"), EndOfMessage()]
        respond(conn)
        assert conn.keep_alive
        conn.start_next_cycle()


def test_empty_line_after_a_body_is_skipped_before_the_next_request() -> None:
    # RFC 9112 2.2: some clients send an extra CRLF after a POST body.
    conn = ServerConnection()
    conn.receive_data(POST5 + b"\r\n" + GET % 2)
    events_until_pause(conn)
    respond(conn)
    conn.start_next_cycle()
    assert events_until_pause(conn)[0].target == b"/2"


def test_unread_body_blocks_keep_alive_until_drained() -> None:
    conn = ServerConnection()
    conn.receive_data(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhel")
    assert isinstance(conn.next_event(), Request)
    respond(conn)  # the app answered without reading the body
    assert not conn.keep_alive
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()
    assert conn.next_event() == Data(b"hel")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"lo, wor" + GET % 2)
    assert conn.next_event() == Data(b"lo, wor")  # never past the body's end
    assert conn.next_event() == EndOfMessage()
    assert conn.keep_alive
    conn.start_next_cycle()
    assert events_until_pause(conn)[0] == Request(b"GET", b"/2", b"1.1", ((b"host", b"a"),))


def test_body_pieces_arrive_as_they_are_received() -> None:
    conn = ServerConnection()
    conn.receive_data(b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert conn.next_event().chunked
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"a\r\n01234")
    assert conn.next_event() == Data(b"01234")
    conn.receive_data(b"56789\r\n0\r\n\r\n")
    assert conn.next_event() == Data(b"56789")
    assert conn.next_event() == EndOfMessage()
    assert conn.next_event() is PAUSED


def test_eof_between_requests_is_connection_closed() -> None:
    conn = ServerConnection()
    conn.receive_data(GET % 1)
    events_until_pause(conn)
    respond(conn)
    conn.start_next_cycle()
    conn.receive_data(b"\r\n")  # an empty line before EOF is still a clean close
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()
    assert conn.next_event() == ConnectionClosed()
    assert not conn.keep_alive
    assert conn.trailing_data == (b"", True)


def test_data_after_eof_is_a_caller_error() -> None:
    conn = ServerConnection()
    conn.receive_data(b"")
    conn.receive_data(b"")  # repeating EOF is harmless
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"GET")


def test_eof_after_a_complete_request_keeps_it_usable() -> None:
    conn = ServerConnection()
    conn.receive_data(POST5)
    conn.receive_data(b"")
    assert events_until_pause(conn)[1:] == [Data(b"hello"), EndOfMessage()]
    respond(conn)
    conn.start_next_cycle()
    assert conn.next_event() == ConnectionClosed()


def test_client_keep_alive_wish_versus_server_policy() -> None:
    conn = ServerConnection(keep_alive_allowed=False)
    conn.receive_data(GET % 1)
    request = conn.next_event()
    assert request.keep_alive  # what the client asked for
    assert not conn.keep_alive  # the final word
    conn.next_event()
    assert b"Connection: close\r\n" in respond(conn)
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()


def test_continue_is_sent_once_and_only_before_the_response() -> None:
    conn = ServerConnection()
    conn.receive_data(EXPECTING)
    assert conn.next_event().expect_continue
    assert conn.continue_bytes() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.continue_bytes() == b""
    conn.receive_data(b"ok")
    assert conn.next_event() == Data(b"ok")

    late = ServerConnection()
    late.receive_data(EXPECTING)
    late.next_event()
    late.start_response(200, b"OK", [(b"Content-Length", b"0")])
    assert late.continue_bytes() == b""  # the response began: no interim response now


def test_continue_not_owed_without_expectation() -> None:
    conn = ServerConnection()
    conn.receive_data(POST5)
    conn.next_event()
    assert conn.continue_bytes() == b""


def test_continue_owed_again_only_by_the_next_request() -> None:
    conn = ServerConnection()
    conn.receive_data(EXPECTING + b"ok" + GET % 2)
    events_until_pause(conn)
    respond(conn)
    conn.start_next_cycle()
    events_until_pause(conn)
    assert conn.continue_bytes() == b""


def test_error_is_final() -> None:
    conn = ServerConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\n\r\n" + GET % 2)
    with pytest.raises(RemoteProtocolError) as raised:
        conn.next_event()
    assert raised.value.status == 400
    assert "Host" in str(raised.value)
    conn.receive_data(GET % 3)
    conn.receive_data(b"")
    for _ in range(3):
        with pytest.raises(RemoteProtocolError) as again:
            conn.next_event()
        assert (again.value.status, str(again.value)) == (400, str(raised.value))
    assert not conn.keep_alive


def test_error_in_body_after_the_request_event() -> None:
    conn = ServerConnection()
    conn.receive_data(b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert isinstance(conn.next_event(), Request)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.error_response(400).startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_head_one_byte_at_a_time_never_rescans(monkeypatch) -> None:
    """ReceiveBuffer's promise: each head search resumes where the last one stopped."""
    scanned: list[int] = []
    real = receivebuffer._head_end_re

    class Spy:
        def search(self, data, pos=0):
            scanned.append(len(data) - pos)
            return real.search(data, pos)

    monkeypatch.setattr(receivebuffer, "_head_end_re", Spy())
    raw = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Filler: " + b"f" * 7000 + b"\r\n\r\n"
    conn = ServerConnection()
    for i in range(len(raw)):
        conn.receive_data(raw[i : i + 1])
        event = conn.next_event()
    assert isinstance(event, Request)
    # Quadratic rescanning would be about len(raw)**2 / 2 (25 million bytes here).
    assert sum(scanned) <= 3 * len(raw)


def test_limits_are_per_connection() -> None:
    strict = ServerConnection(Limits(max_header_count=1))
    strict.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as raised:
        strict.next_event()
    assert raised.value.status == 431
    default = ServerConnection()
    default.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n")
    assert isinstance(default.next_event(), Request)
