"""The request-cycle policy (server/wsgi/policy.py) as pure decisions: one test a row.

Its verdicts drive every worker; the rows a client can see are also pinned through
real workers in tests/server/test_policy_wire.py. The connections given to it here
are real sans-IO ServerConnections fed bytes, not stand-ins.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import os
from pathlib import Path

import pytest
from polycorn.server.http.connection import ServerConnection
from polycorn.server.wsgi import policy
from polycorn.server.wsgi.policy import (
    End,
    Failure,
    Verdict,
    client_may_send,
    end_after_response,
    failure_verdict,
    head_says_close,
    may_drain,
    request_body_pending,
    sendfile_applies,
    sent_body_bytes,
    status_line,
)

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
E, D = logging.ERROR, logging.DEBUG


# --- failures: one row each ---------------------------------------------------------

ROWS = [
    # failure, response_started, client_may_send -> answer, end, observed, level, traceback
    (Failure.BAD_REQUEST, False, True, Verdict(400, End.LINGER, True, D, False)),
    (Failure.BAD_REQUEST, False, False, Verdict(400, End.CLOSE, True, D, False)),
    (Failure.BAD_REQUEST, True, True, Verdict(None, End.CUT, False, D, False)),
    (Failure.APP_ERROR, False, True, Verdict(500, End.LINGER, True, E, True)),
    (Failure.APP_ERROR, False, False, Verdict(500, End.CLOSE, True, E, True)),
    (Failure.APP_ERROR, True, True, Verdict(None, End.CUT, False, E, True)),
    (Failure.APP_ERROR, True, False, Verdict(None, End.CUT, False, E, True)),
    (Failure.CLIENT_GONE, False, False, Verdict(None, End.CUT, False, D, False)),
    (Failure.CLIENT_GONE, True, False, Verdict(None, End.CUT, True, D, False)),
    (Failure.CLOSE_FAILED, True, True, Verdict(None, End.LINGER, True, E, True)),
    (Failure.CLOSE_FAILED, True, False, Verdict(None, End.CLOSE, True, E, True)),
    (Failure.SHORT_FILE, True, False, Verdict(None, End.CUT, True, E, False)),
    (Failure.TAKEN_OVER, False, False, Verdict(None, End.CUT, False, D, False)),
]


@pytest.mark.parametrize("failure,started,may_send,expected", ROWS,
                         ids=[f"{r[0].name}-started{r[1]:d}-maysend{r[2]:d}" for r in ROWS])
def test_each_failure_has_one_verdict(failure, started, may_send, expected) -> None:
    status = 400 if failure is Failure.BAD_REQUEST else 500
    assert failure_verdict(failure, response_started=started, client_may_send=may_send,
                           status=status) == expected


def test_a_bad_request_refused_before_the_app_is_not_observed() -> None:
    """The event worker refuses a bad head or body before the app runs: no hooks ran,
    so post_request and the access log do not see it (its status still goes out)."""
    verdict = failure_verdict(Failure.BAD_REQUEST, response_started=False,
                              client_may_send=True, status=431, app_called=False)
    assert (verdict.answer, verdict.end, verdict.observed) == (431, End.LINGER, False)


def test_every_failure_has_a_row() -> None:
    for failure in Failure:
        for started in (False, True):
            verdict = failure_verdict(failure, response_started=started, client_may_send=True)
            assert verdict.end is not End.NEXT  # a failed cycle never keeps the connection
            assert verdict.answer is None or not started  # no error page after a head


# --- after a whole response -----------------------------------------------------------

def answered(raw: bytes, *, keep_alive_allowed: bool = True, headers=(), eof: bool = False,
             read_body: bool = True) -> ServerConnection:
    """A connection that received raw and answered its first request whole."""
    conn = ServerConnection(keep_alive_allowed=keep_alive_allowed)
    conn.receive_data(raw)
    if eof:
        conn.receive_data(b"")
    conn.next_event()  # the request
    if read_body:
        while type(conn.next_event()).__name__ != "EndOfMessage":
            pass
    conn.start_response(200, b"OK", [(b"Content-Length", b"2"), *headers])
    conn.send_body(b"ok")
    conn.end_response()
    return conn


def test_a_reusable_connection_carries_the_next_request() -> None:
    assert end_after_response(answered(GET)) is End.NEXT


def test_close_without_pending_bytes_is_a_plain_close() -> None:
    assert end_after_response(answered(GET, keep_alive_allowed=False)) is End.CLOSE
    assert end_after_response(answered(GET, headers=[(b"Connection", b"close")])) is End.CLOSE


def test_close_with_pipelined_bytes_lingers() -> None:
    """A close on unread bytes would reset the connection and could destroy the
    response just written (RFC 9112 9.6)."""
    conn = answered(GET + GET, keep_alive_allowed=False)
    assert client_may_send(conn)
    assert end_after_response(conn) is End.LINGER


def test_the_client_closed_its_side_so_nothing_to_linger_for() -> None:
    conn = answered(GET + GET, keep_alive_allowed=False, eof=True)
    assert not client_may_send(conn, body_unread=True)
    assert end_after_response(conn, body_unread=True) is End.CLOSE


def test_an_unread_body_never_carries_the_next_request() -> None:
    post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
    conn = answered(post, read_body=False)
    assert end_after_response(conn, body_unread=True) is End.LINGER


# --- smaller decisions ----------------------------------------------------------------------

@pytest.mark.parametrize("running,pending,over,says_close", [
    (True, False, False, False),
    (False, False, False, True),   # draining: a reused connection would race our close
    (True, True, False, True),     # the client still waits for 100 Continue
    (True, False, True, True),     # too much unread body to drain
])
def test_when_the_head_says_connection_close(running, pending, over, says_close) -> None:
    assert head_says_close(worker_running=running, continue_pending=pending,
                           unread_over_limit=over) is says_close


def test_drain_only_when_both_sides_allow_keep_alive() -> None:
    assert may_drain(keep_alive_allowed=True, request_keep_alive=True)
    assert not may_drain(keep_alive_allowed=False, request_keep_alive=True)
    assert not may_drain(keep_alive_allowed=True, request_keep_alive=False)


@pytest.mark.parametrize("finished,chunked,length,read,pending", [
    (True, True, None, 0, False),
    (False, False, None, 0, False),   # a GET: no body, even before its end is parsed
    (False, False, 0, 0, False),
    (False, False, 10, 4, True),
    (False, False, 10, 10, False),
    (False, True, None, 100, True),   # chunked: only its end says it is over
])
def test_request_body_pending(finished, chunked, length, read, pending) -> None:
    assert request_body_pending(finished=finished, chunked=chunked, content_length=length,
                                bytes_read=read) is pending


def test_sendfile_applies_only_to_a_regular_file_with_a_body(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    with open(path, "rb") as regular:
        assert sendfile_applies(True, b"GET", 200, 10, regular)
        assert not sendfile_applies(False, b"GET", 200, 10, regular)  # --no-sendfile, TLS
        assert not sendfile_applies(True, b"HEAD", 200, 10, regular)
        assert not sendfile_applies(True, b"GET", 304, 10, regular)
        assert not sendfile_applies(True, b"GET", 204, 10, regular)
        assert not sendfile_applies(True, b"GET", 200, None, regular)  # chunked
        assert not sendfile_applies(True, b"GET", 200, 0, regular)  # nothing to send
    r, w = os.pipe()
    with os.fdopen(r, "rb") as pipe, os.fdopen(w, "wb"):
        assert not sendfile_applies(True, b"GET", 200, 10, pipe)
    assert not sendfile_applies(True, b"GET", 200, 10, object())  # no fileno()


def test_bytes_logged_are_the_bytes_a_response_carries() -> None:
    assert sent_body_bytes(False, 200, 5) == 5
    assert sent_body_bytes(True, 200, 5) == 0
    assert sent_body_bytes(False, 204, 5) == 0
    assert sent_body_bytes(False, 304, 5) == 0


def test_status_lines() -> None:
    assert status_line(500) == "500 Internal Server Error"
    assert status_line(431) == "431 Request Header Fields Too Large"
    assert status_line(599) == "599"


# --- sans-IO ---------------------------------------------------------------------------------

def test_the_policy_is_callable_from_a_coroutine() -> None:
    async def decide() -> End:
        await asyncio.sleep(0)
        return failure_verdict(Failure.APP_ERROR, response_started=False,
                               client_may_send=False).end

    assert asyncio.run(decide()) is End.CLOSE


def test_the_policy_imports_nothing_that_does_io() -> None:
    tree = ast.parse(Path(policy.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "enum", "http", "logging", "os", "stat", "dataclasses",
                        "typing"}, imported
    assert not imported & {"socket", "select", "selectors", "asyncio", "time", "threading"}
