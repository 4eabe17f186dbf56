"""respond_whole gives what start_response, send_body and end_response give, one by one.

The event worker answers a one-chunk body with respond_whole (FastConnection takes
a shorter road there). For every kind of framing and every mistake, the bytes, the
error, and the state left behind must be those of the three calls (pure, no sockets).
"""

from __future__ import annotations

import pytest
from polycorn.server.http.connection import ServerConnection
from polycorn.server.http.errors import LocalProtocolError
from polycorn.server.http.fast import FastConnection
from polycorn.server.http.httpdate import DateCache

CONNECTIONS = [ServerConnection, FastConnection]
GET11 = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"

CASES = {
    "length matches": (GET11, 200, [(b"Content-Length", b"5")], b"hello"),
    "no length (chunked)": (GET11, 200, [(b"Content-Type", b"text/plain")], b"hello"),
    "no length, empty body": (GET11, 200, [], b""),
    "HTTP/1.0, no length (close-delimited)": (b"GET / HTTP/1.0\r\n\r\n", 200, [], b"hello"),
    "HTTP/1.0 keep-alive with length": (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                                        200, [(b"Content-Length", b"2")], b"ok"),
    "HEAD drops the body": (b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", 200,
                            [(b"Content-Length", b"5")], b"hello"),
    "204 has no body": (GET11, 204, [], b""),
    "304 keeps the length": (GET11, 304, [(b"Content-Length", b"5")], b""),
    "app says close": (GET11, 200, [(b"Connection", b"close"), (b"Content-Length", b"2")], b"ok"),
    "client says close": (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 200,
                          [(b"Content-Length", b"2")], b"ok"),
}

MISTAKES = {
    "body longer than its length": ([(b"Content-Length", b"3")], b"hello", "longer"),
    "body shorter than its length": ([(b"Content-Length", b"9")], b"hello", "short"),
    "invalid Content-Length": ([(b"Content-Length", b"5x")], b"hello", "Content-Length"),
    "CR in a value": ([(b"X-A", b"a\r\nX-B: b")], b"hello", "CR, LF or NUL"),
}


def ready(conn_class, head: bytes = GET11):
    conn = conn_class(date_cache=DateCache(clock=lambda: 0.0))
    conn.receive_data(head)
    conn.next_event()  # the Request
    conn.next_event()  # its EndOfMessage
    return conn


def state(conn) -> tuple:
    return conn.keep_alive, conn.response_started


def in_steps(conn, status, headers, body) -> bytes:
    return conn.start_response(status, b"OK", headers) + conn.send_body(body) + conn.end_response()


@pytest.mark.parametrize("conn_class", CONNECTIONS)
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
@pytest.mark.parametrize("rounds", [1, 2], ids=["first", "remembered"])
def test_the_same_bytes_and_state_as_the_three_calls(conn_class, case, rounds) -> None:
    head, status, headers, body = CASES[case]
    for _ in range(rounds):  # the second round meets the head cache
        whole, steps = ready(conn_class, head), ready(conn_class, head)
        assert whole.respond_whole(status, b"OK", list(headers), body) == in_steps(
            steps, status, list(headers), body)
        assert state(whole) == state(steps)
        if whole.keep_alive:  # the next cycle begins as after the three calls
            whole.start_next_cycle()
            whole.receive_data(GET11)
            assert whole.next_event().target == b"/"


@pytest.mark.parametrize("conn_class", CONNECTIONS)
@pytest.mark.parametrize("mistake", MISTAKES, ids=list(MISTAKES))
@pytest.mark.parametrize("rounds", [1, 2], ids=["first", "remembered"])
def test_the_same_error_and_state_as_the_three_calls(conn_class, mistake, rounds) -> None:
    headers, body, words = MISTAKES[mistake]
    for _ in range(rounds):
        whole, steps = ready(conn_class), ready(conn_class)
        with pytest.raises(LocalProtocolError, match=words) as whole_error:
            whole.respond_whole(200, b"OK", list(headers), body)
        with pytest.raises(LocalProtocolError) as steps_error:
            in_steps(steps, 200, list(headers), body)
        assert str(whole_error.value) == str(steps_error.value)
        assert state(whole) == state(steps)
        # A refused head leaves room for the 500; a body mistake does not.
        if not whole.response_started:
            assert whole.error_response(500).startswith(b"HTTP/1.1 500 ")


@pytest.mark.parametrize("conn_class", CONNECTIONS)
def test_a_short_body_error_carries_what_the_calls_had_framed(conn_class) -> None:
    """The asgi worker sends a short body's framed bytes before cutting (the client
    sees the response truncated, as when the three calls are made one by one)."""
    headers = [(b"Content-Length", b"9")]
    whole, steps = ready(conn_class), ready(conn_class)
    with pytest.raises(LocalProtocolError, match="short") as error:
        whole.respond_whole(200, b"OK", list(headers), b"hello")
    framed = steps.start_response(200, b"OK", list(headers)) + steps.send_body(b"hello")
    assert error.value.framed == framed and framed.endswith(b"\r\n\r\nhello")


@pytest.mark.parametrize("conn_class", CONNECTIONS)
def test_a_second_response_to_one_request_is_refused(conn_class) -> None:
    conn = ready(conn_class)
    conn.respond_whole(200, b"OK", [(b"Content-Length", b"2")], b"ok")
    with pytest.raises(LocalProtocolError):
        conn.respond_whole(200, b"OK", [(b"Content-Length", b"2")], b"ok")


@pytest.mark.parametrize("conn_class", CONNECTIONS)
def test_unhashable_headers_take_the_long_way_to_the_same_answer(conn_class) -> None:
    headers = [[b"Content-Length", b"2"]]  # lists, not tuples: no head cache key
    whole, steps = ready(conn_class), ready(conn_class)
    assert whole.respond_whole(200, b"OK", headers, b"ok") == in_steps(steps, 200, headers, b"ok")


def test_no_request_yet_is_refused_as_by_start_response() -> None:
    for conn_class in CONNECTIONS:
        with pytest.raises(LocalProtocolError, match="no request"):
            conn_class().respond_whole(200, b"OK", [], b"")
