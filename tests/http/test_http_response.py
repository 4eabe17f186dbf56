"""Response framing: one table of (request, response given by the app) -> exact wire bytes.

The Date is pinned by a DateCache with a fixed clock, so every byte is compared.
Then the app mistakes that must raise LocalProtocolError (never a split or lying
response), and error_response.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from polycorn.server.http import httpdate
from polycorn.server.http.connection import ServerConnection
from polycorn.server.http.errors import LocalProtocolError, RemoteProtocolError
from polycorn.server.http.events import EndOfMessage, Request
from polycorn.server.http.httpdate import DateCache, format_http_date

CLOCK = 784111777.25  # RFC 9110 5.6.7's example instant
DATE = b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
SERVER = b"Server: polycorn\r\n"
TAIL = DATE + SERVER + b"\r\n"

GET11 = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
GET11_CLOSE = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
GET10 = b"GET / HTTP/1.0\r\n\r\n"
GET10_KEEP = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
HEAD11 = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
HEAD10_KEEP = b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
CT = (b"Content-Type", b"text/plain")


def connection(raw: bytes, **kw) -> tuple[ServerConnection, Request]:
    conn = ServerConnection(date_cache=DateCache(clock=lambda: CLOCK), **kw)
    conn.receive_data(raw)
    request = conn.next_event()
    assert isinstance(request, Request)
    assert conn.next_event() == EndOfMessage()
    return conn, request


@dataclass(frozen=True)
class Case:
    name: str
    request: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: list[bytes]
    wire: bytes
    keep_alive: bool
    connection_options: dict = field(default_factory=dict)


CASES = [
    Case("rfc9112-6.2-content-length-from-app", GET11, 200, b"OK", [CT, (b"Content-Length", b"5")],
         [b"hel", b"lo"],
         b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n" + TAIL + b"hello",
         True),
    Case("rfc9112-7.1-chunked-without-length-http11", GET11, 200, b"OK", [CT],
         [b"ab", b"", b"cde"],
         b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n" + TAIL
         + b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n", True),
    Case("rfc9112-7.1-chunked-binary-piece", GET11, 200, b"OK", [], [b"\r\n0\r\n\r\n"],
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + TAIL
         + b"7\r\n\r\n0\r\n\r\n\r\n0\r\n\r\n", True),
    Case("rfc9112-7.1-chunked-empty-body", GET11, 200, b"OK", [], [],
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + TAIL + b"0\r\n\r\n", True),
    Case("rfc9112-6.3-close-delimited-http10", GET10, 200, b"OK", [CT], [b"ab", b"c"],
         b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n" + TAIL + b"abc",
         False),
    Case("rfc9112-9.3-http10-keep-alive-with-length", GET10_KEEP, 200, b"OK",
         [(b"Content-Length", b"2")], [b"ab"],
         b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n" + TAIL + b"ab", True),
    Case("rfc9112-9.3-http10-keep-alive-without-length-closes", GET10_KEEP, 200, b"OK", [], [b"ab"],
         b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + TAIL + b"ab", False),
    Case("rfc9110-9.3.2-head-keeps-app-content-length", HEAD11, 200, b"OK",
         [(b"Content-Length", b"5")], [b"hello"],
         b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + TAIL, True),
    Case("rfc9110-9.3.2-head-without-length", HEAD11, 200, b"OK", [CT], [b"ignored"],
         b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + TAIL, True),
    Case("rfc9112-9.3-head-http10-keep-alive", HEAD10_KEEP, 200, b"OK", [], [],
         b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n" + TAIL, True),
    Case("rfc9110-8.6-204-drops-content-length", GET11, 204, b"No Content",
         [(b"Content-Length", b"0")], [b""],
         b"HTTP/1.1 204 No Content\r\n" + TAIL, True),
    Case("rfc9110-15.4.5-304-keeps-content-length", GET11, 304, b"Not Modified",
         [(b"ETag", b'"x"'), (b"Content-Length", b"42")], [b"dropped"],
         b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\nContent-Length: 42\r\n' + TAIL, True),
    Case("rfc9110-15.4.5-304-without-length", GET11, 304, b"Not Modified", [], [],
         b"HTTP/1.1 304 Not Modified\r\n" + TAIL, True),
    Case("rfc9110-15.2-1xx-as-final-answer-closes", GET11, 101, b"Switching Protocols",
         [(b"Upgrade", b"x")], [],
         b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: close\r\n" + TAIL, False),
    Case("rfc9112-9.6-app-connection-close-honoured", GET11, 200, b"OK",
         [(b"Connection", b"close"), (b"Content-Length", b"0")], [],
         b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n" + TAIL, False),
    Case("rfc9112-9.6-app-connection-close-in-list", GET11, 200, b"OK",
         [(b"connection", b"x-opt, Close"), (b"Content-Length", b"0")], [],
         b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n" + TAIL, False),
    Case("rfc9112-9.3-app-connection-keep-alive-dropped", GET11, 200, b"OK",
         [(b"Connection", b"keep-alive"), (b"Content-Length", b"0")], [],
         b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + TAIL, True),
    Case("rfc9112-6.1-app-transfer-encoding-replaced", GET11, 200, b"OK",
         [(b"Transfer-Encoding", b"chunked")], [b"x"],
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + TAIL + b"1\r\nx\r\n0\r\n\r\n", True),
    Case("rfc9112-6.1-app-transfer-encoding-dropped-for-length", GET11, 200, b"OK",
         [(b"Transfer-Encoding", b"gzip"), (b"Content-Length", b"1")], [b"x"],
         b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n" + TAIL + b"x", True),
    Case("rfc9110-6.6.1-app-date-and-server-kept", GET11, 200, b"OK",
         [(b"Server", b"mine"), (b"date", b"Mon, 07 Nov 1994 00:00:00 GMT"),
          (b"Content-Length", b"0")], [],
         b"HTTP/1.1 200 OK\r\nServer: mine\r\ndate: Mon, 07 Nov 1994 00:00:00 GMT\r\n"
         b"Content-Length: 0\r\n\r\n", True),
    Case("rfc9112-9.6-client-close-answered-with-close", GET11_CLOSE, 200, b"OK",
         [(b"Content-Length", b"0")], [],
         b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n" + TAIL, False),
    Case("policy-keep-alive-not-allowed", GET11, 200, b"OK", [(b"Content-Length", b"0")], [],
         b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n" + TAIL, False,
         {"keep_alive_allowed": False}),
    Case("rfc9110-8.6-equal-app-content-lengths-merged", GET11, 200, b"OK",
         [(b"Content-Length", b"3"), (b"content-length", b" 3 ")], [b"abc"],
         b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n" + TAIL + b"abc", True),
    Case("rfc9112-4-empty-reason-keeps-space", GET11, 200, b"", [(b"Content-Length", b"0")], [],
         b"HTTP/1.1 200 \r\nContent-Length: 0\r\n" + TAIL, True),
    Case("rfc9110-15-extension-status", GET11, 599, b"Network Timeout",
         [(b"Content-Length", b"0")], [],
         b"HTTP/1.1 599 Network Timeout\r\nContent-Length: 0\r\n" + TAIL, True),
    Case("rfc9110-5.3-repeated-fields-keep-order", GET11, 200, b"OK",
         [(b"Set-Cookie", b"a=1"), (b"X-Other", b"o"), (b"Set-Cookie", b"b=2"),
          (b"Content-Length", b"0")], [],
         b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Other: o\r\nSet-Cookie: b=2\r\n"
         b"Content-Length: 0\r\n" + TAIL, True),
    Case("rfc9110-5.5-obs-text-and-tab-in-value", GET11, 200, b"OK",
         [(b"X-Latin", b"caf\xe9\tok"), (b"Content-Length", b"0")], [],
         b"HTTP/1.1 200 OK\r\nX-Latin: caf\xe9\tok\r\nContent-Length: 0\r\n" + TAIL, True),
    Case("rfc9112-9.3-http10-204-closes", GET10, 204, b"No Content", [], [],
         b"HTTP/1.1 204 No Content\r\nConnection: close\r\n" + TAIL, False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_response_wire_bytes(case: Case) -> None:
    conn, _ = connection(case.request, **case.connection_options)
    wire = conn.start_response(case.status, case.reason, case.headers)
    assert conn.response_started
    wire += b"".join(conn.send_body(piece) for piece in case.body)
    wire += conn.end_response()
    assert wire == case.wire
    assert conn.keep_alive is case.keep_alive


def test_refuse_keep_alive_makes_the_response_say_close() -> None:
    conn, _ = connection(GET11)
    conn.refuse_keep_alive()
    head = conn.start_response(200, b"OK", [(b"Content-Length", b"0")])
    assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n" + TAIL
    conn.end_response()
    assert not conn.keep_alive


# --- error_response --------------------------------------------------------------------

ERROR_HEAD = b"Content-Type: text/plain; charset=utf-8\r\n"


def test_error_response_after_a_bad_request() -> None:
    conn = ServerConnection(date_cache=DateCache(clock=lambda: CLOCK))
    conn.receive_data(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as raised:
        conn.next_event()
    assert raised.value.status == 400
    assert conn.error_response(raised.value.status) == (
        b"HTTP/1.1 400 Bad Request\r\n" + ERROR_HEAD
        + b"Content-Length: 16\r\nConnection: close\r\n" + TAIL + b"400 Bad Request\n")
    assert not conn.keep_alive
    assert conn.response_started


def test_error_response_with_message_and_unknown_status() -> None:
    conn = ServerConnection(date_cache=DateCache(clock=lambda: CLOCK))
    assert conn.error_response(799, "caf\u00e9 down") == (
        b"HTTP/1.1 799 Unknown\r\n" + ERROR_HEAD
        + b"Content-Length: 11\r\nConnection: close\r\n" + TAIL + b"caf\xc3\xa9 down\n")


def test_error_response_before_any_request() -> None:
    conn = ServerConnection(date_cache=DateCache(clock=lambda: CLOCK))
    wire = conn.error_response(408)
    assert wire.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert wire.endswith(b"\r\n\r\n408 Request Timeout\n")


def test_error_response_to_head_has_no_body() -> None:
    conn, _ = connection(HEAD11)
    assert conn.error_response(500) == (
        b"HTTP/1.1 500 Internal Server Error\r\n" + ERROR_HEAD
        + b"Content-Length: 26\r\nConnection: close\r\n" + TAIL)


def test_error_response_only_before_a_response() -> None:
    conn, _ = connection(GET11)
    conn.start_response(200, b"OK", [])
    with pytest.raises(LocalProtocolError):
        conn.error_response(500)


# --- the app's mistakes ----------------------------------------------------------------

BAD_HEADS = [
    ("status-too-small", 99, b"X", []),
    ("status-too-large", 1000, b"X", []),
    ("status-not-int", "200", b"OK", []),
    ("status-bool", True, b"OK", []),
    ("reason-with-crlf", 200, b"OK\r\nX-Injected: 1", []),
    ("reason-with-lf", 200, b"OK\n", []),
    ("reason-not-bytes", 200, "OK", []),
    ("name-with-space", 200, b"OK", [(b"X Bad", b"v")]),
    ("name-with-colon", 200, b"OK", [(b"X:Bad", b"v")]),
    ("name-empty", 200, b"OK", [(b"", b"v")]),
    ("name-with-lf", 200, b"OK", [(b"X\nInjected", b"v")]),
    ("name-with-crlf", 200, b"OK", [(b"A", b"1"), (b"X\r\nY", b"v")]),
    ("value-with-crlf", 200, b"OK", [(b"X", b"a\r\nSet-Cookie: evil")]),
    ("value-with-lf", 200, b"OK", [(b"X", b"a\nb")]),
    ("value-with-cr", 200, b"OK", [(b"X", b"a\rb")]),
    ("value-with-nul", 200, b"OK", [(b"X", b"a\x00b")]),
    ("name-not-bytes", 200, b"OK", [("X", b"v")]),
    ("value-not-bytes", 200, b"OK", [(b"X", "v")]),
    ("content-length-not-digits", 200, b"OK", [(b"Content-Length", b"abc")]),
    ("content-length-negative", 200, b"OK", [(b"Content-Length", b"-1")]),
    ("content-lengths-conflict", 200, b"OK",
     [(b"Content-Length", b"1"), (b"Content-Length", b"2")]),
]


@pytest.mark.parametrize(("status", "reason", "headers"), [c[1:] for c in BAD_HEADS],
                         ids=[c[0] for c in BAD_HEADS])
def test_bad_response_head_is_refused_and_nothing_sent(status, reason, headers) -> None:
    conn, _ = connection(GET11)
    with pytest.raises(LocalProtocolError) as raised:
        conn.start_response(status, reason, headers)
    assert raised.value.status == 500
    # Nothing went out: the worker can still answer 500 in a clean response.
    assert not conn.response_started
    assert conn.error_response(500).startswith(b"HTTP/1.1 500 Internal Server Error\r\n")


def test_body_longer_than_content_length() -> None:
    conn, _ = connection(GET11)
    conn.start_response(200, b"OK", [(b"Content-Length", b"3")])
    assert conn.send_body(b"ab") == b"ab"
    with pytest.raises(LocalProtocolError):
        conn.send_body(b"cd")
    assert not conn.keep_alive


def test_body_shorter_than_content_length() -> None:
    conn, _ = connection(GET11)
    conn.start_response(200, b"OK", [(b"Content-Length", b"3")])
    conn.send_body(b"ab")
    with pytest.raises(LocalProtocolError):
        conn.end_response()
    assert not conn.keep_alive
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()


@pytest.mark.parametrize("misuse", [
    "body-before-head", "end-before-head", "two-heads", "body-after-end", "next-cycle-mid-response",
])
def test_out_of_order_calls(misuse: str) -> None:
    conn, _ = connection(GET11)
    if misuse in ("two-heads", "body-after-end", "next-cycle-mid-response"):
        conn.start_response(200, b"OK", [])
    if misuse == "body-after-end":
        conn.end_response()
    call = {
        "body-before-head": lambda: conn.send_body(b"x"),
        "end-before-head": conn.end_response,
        "two-heads": lambda: conn.start_response(200, b"OK", []),
        "body-after-end": lambda: conn.send_body(b"x"),
        "next-cycle-mid-response": conn.start_next_cycle,
    }[misuse]
    with pytest.raises(LocalProtocolError):
        call()


def test_start_response_needs_a_request() -> None:
    conn = ServerConnection()
    with pytest.raises(LocalProtocolError):
        conn.start_response(200, b"OK", [])


def test_date_is_formatted_once_per_second(monkeypatch) -> None:
    """The Date text is built once per whole second, not once per response."""
    formatted: list[int] = []
    monkeypatch.setattr(httpdate, "format_http_date",
                        lambda s: formatted.append(s) or format_http_date(s))
    now = [100.1]
    cache = DateCache(clock=lambda: now[0])
    first = cache.current()
    now[0] = 100.9
    assert cache.current() is first
    now[0] = 101.0
    assert cache.current() == b"Thu, 01 Jan 1970 00:01:41 GMT"
    assert formatted == [100, 101]


@pytest.mark.parametrize(("seconds", "text"), [
    (0, b"Thu, 01 Jan 1970 00:00:00 GMT"),
    (784111777, b"Sun, 06 Nov 1994 08:49:37 GMT"),
    (951782400, b"Tue, 29 Feb 2000 00:00:00 GMT"),
    (4102444799, b"Thu, 31 Dec 2099 23:59:59 GMT"),
])
def test_imf_fixdate(seconds: int, text: bytes) -> None:
    assert format_http_date(seconds) == text
