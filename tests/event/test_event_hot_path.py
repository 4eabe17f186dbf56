"""The shortcuts the hot path takes give exactly what the long way gives (pure, no sockets).

StartResponse remembers validated header lists; framed_head remembers framed
response heads (for ServerConnection and FastConnection alike). Each test compares a remembered answer with a fresh one, and
checks that what the long way refuses is still refused after a similar success.
"""

from __future__ import annotations

import pytest
from polycorn.server.http.connection import ServerConnection
from polycorn.server.http.fast import FastConnection
from polycorn.server.http.httpdate import DateCache
from polycorn.server.http.response import MAX_CACHED_HEADS, framed_head
from polycorn.server.wsgi.response import StartResponse

HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "5"), ("Keep-Alive", "5")]


def declared(headers) -> tuple:
    start = StartResponse()
    start("200 OK", headers)
    return start.headers, start.wire_headers, start.content_length


def test_a_remembered_header_list_gives_the_same_declaration() -> None:
    first = declared(list(HEADERS))
    again = declared(list(HEADERS))
    assert first == again
    assert again[0] == [("Content-Type", "text/plain"), ("Content-Length", "5")]  # hop-by-hop gone
    assert again[2] == 5


def test_changing_a_remembered_declaration_does_not_change_the_next() -> None:
    declared(list(HEADERS))
    headers, wire, _ = declared(list(HEADERS))
    headers.append(("X-Added", "by a hook"))
    wire.clear()
    assert declared(list(HEADERS))[:2] == (
        [("Content-Type", "text/plain"), ("Content-Length", "5")],
        [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")])


class Text(str):
    """A str subclass: refused by start_response even when equal to a remembered str."""


class Pair(tuple):
    """A tuple subclass: likewise refused."""


@pytest.mark.parametrize("odd", [
    [(Text("Content-Type"), "text/plain"), ("Content-Length", "5"), ("Keep-Alive", "5")],
    [("Content-Type", Text("text/plain")), ("Content-Length", "5"), ("Keep-Alive", "5")],
    [Pair(("Content-Type", "text/plain")), ("Content-Length", "5"), ("Keep-Alive", "5")],
])
def test_look_alikes_of_a_remembered_list_are_still_refused(odd) -> None:
    declared(list(HEADERS))
    assert odd == HEADERS
    with pytest.raises(TypeError):
        declared(odd)


def test_invalid_lists_are_refused_every_time() -> None:
    bad = [("Content-Type", "text/plain\r\nX-Injected: 1")]
    for _ in range(2):
        with pytest.raises(ValueError):
            declared(list(bad))


def respond(conn_class, clock_value: float, headers) -> bytes:
    conn = conn_class(date_cache=DateCache(clock=lambda: clock_value))
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.next_event(), conn.next_event()
    return conn.start_response(200, b"OK", headers) + conn.send_body(b"hello") + conn.end_response()


def test_remembered_heads_carry_the_current_date() -> None:
    headers = [(b"Content-Length", b"5")]
    for second in (0.0, 86400.0, 86401.5):
        assert respond(FastConnection, second, headers) == respond(ServerConnection, second,
                                                                   headers)


def test_a_remembered_head_with_a_length_counts_each_body_afresh() -> None:
    headers = [(b"Content-Length", b"5")]
    respond(FastConnection, 0.0, headers)
    conn = FastConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.next_event(), conn.next_event()
    conn.start_response(200, b"OK", headers)
    conn.send_body(b"hel")
    with pytest.raises(Exception, match="short"):
        conn.end_response()


def test_the_head_memory_is_bounded() -> None:
    from polycorn.server.http import response
    request_conn = FastConnection()
    request_conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    request = request_conn.next_event()
    for i in range(MAX_CACHED_HEADS + 10):
        framed_head(request, 200, b"OK", [(b"X-N", b"%d" % i)], True, DateCache())
    assert len(response._heads) <= MAX_CACHED_HEADS


def test_the_remembered_host_split_follows_each_request() -> None:
    import types

    from polycorn.server.http.events import Request
    from polycorn.server.wsgi.body import WSGIInput
    from polycorn.server.wsgi.environ import EnvironBuilder

    cfg = types.SimpleNamespace(forwarded_allow_ips=["127.0.0.1"], secure_scheme_headers={},
                                forwarder_headers=[], header_map="drop", threads=1, workers=1)
    # Host names the server only on a Unix-socket listener (on TCP the listener does).
    plain = EnvironBuilder(cfg, "/run/plain.sock", "http")
    secure = EnvironBuilder(cfg, "/run/secure.sock", "https")
    expected = {"a.example:81": ("a.example", "81"), "b.example": ("b.example", "80"),
                "[::1]:9": ("[::1]", "9")}
    for _ in range(2):
        for host, (name, port) in expected.items():
            request = Request(b"GET", b"/", b"1.1", ((b"host", host.encode()),))
            environ = plain.build(request, ("127.0.0.1", 1), WSGIInput.from_bytes(b""))
            assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == (name, port)
            secure_environ = secure.build(request, ("127.0.0.1", 1), WSGIInput.from_bytes(b""))
            assert secure_environ["SERVER_PORT"] == (port if ":" in host.rsplit("]", 1)[-1]
                                                     else "443")


def test_requests_built_by_the_fast_path_are_ordinary_frozen_requests() -> None:
    import dataclasses

    from polycorn.server.http.events import Request
    from polycorn.server.http.fast import _new_request

    assert _new_request is not Request  # the descriptor path is in use
    built = _new_request(b"GET", b"/x", b"1.1", ((b"host", b"h"),), 5, False, True, True)
    plain = Request(b"GET", b"/x", b"1.1", ((b"host", b"h"),), 5, False, True, True)
    assert type(built) is Request and built == plain and hash(built) == hash(plain)
    assert repr(built) == repr(plain)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.method = b"POST"


def test_remembered_host_verdicts_refuse_and_accept_as_the_regex_does() -> None:
    from polycorn.server.http import fast
    from polycorn.server.http.errors import RemoteProtocolError

    for _ in range(2):
        bad = FastConnection()
        bad.receive_data(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
        with pytest.raises(RemoteProtocolError):
            bad.next_event()
        good = FastConnection()
        good.receive_data(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        assert good.next_event().headers == ((b"host", b"a.example"),)
        assert good.fallback_reason is None
    for i in range(fast.MAX_KNOWN_HOSTS + 10):
        conn = FastConnection()
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: h%d\r\n\r\n" % i)
        conn.next_event()
    assert len(fast._known_hosts) <= fast.MAX_KNOWN_HOSTS


def test_limits_derive_their_per_connection_bounds_once() -> None:
    import dataclasses

    from polycorn.server.http.limits import HEADER_COUNT_CAP, Limits

    assert (Limits().header_count, Limits().smallest_size_limit) == (100, 8190)
    assert Limits(max_request_line=0, max_header_size=300).smallest_size_limit == 300
    assert Limits(max_request_line=200, max_header_size=0).smallest_size_limit == 200
    assert Limits(max_request_line=0, max_header_size=0).smallest_size_limit == 0
    assert Limits(max_header_count=0).header_count == HEADER_COUNT_CAP
    assert Limits(max_header_count=HEADER_COUNT_CAP + 1).header_count == HEADER_COUNT_CAP
    changed = dataclasses.replace(Limits(), max_request_line=50, max_header_count=7)
    assert (changed.header_count, changed.smallest_size_limit) == (7, 50)
    # Derived values take no part in equality: two equal settings are one Limits.
    assert Limits(max_header_count=7) == Limits(max_header_count=7)
    assert hash(Limits(max_header_count=7)) == hash(Limits(max_header_count=7))


@pytest.mark.parametrize("sizes, held", [((8190, 8190), 8190), ((0, 300), 300),
                                          ((0, 0), "unlimited")])
def test_a_head_past_the_smallest_limit_is_judged_before_it_ends(sizes, held) -> None:
    """The fast path's hold (the smallest size limit, from Limits) still sends a long
    unfinished head to the pure parser's incremental check: 431 before the end."""
    from polycorn.server.http import fast
    from polycorn.server.http.errors import RemoteProtocolError
    from polycorn.server.http.events import NEED_DATA
    from polycorn.server.http.limits import Limits

    line, size = sizes
    conn = FastConnection(Limits(max_request_line=line, max_header_size=size))
    hold = fast.UNLIMITED_HEAD_HOLD if held == "unlimited" else held
    conn.receive_data(b"GET / HTTP/1.1\r\nX: " + b"v" * (hold - 30))
    assert conn.next_event() is NEED_DATA and conn.fallback_reason is None
    conn.receive_data(b"v" * 60)
    if held == "unlimited":
        assert conn.next_event() is NEED_DATA and conn.fallback_reason is not None
    else:
        with pytest.raises(RemoteProtocolError) as refused:
            conn.next_event()
        assert refused.value.status == 431


def test_the_llhttp_parser_is_made_at_the_first_head_and_reused() -> None:
    from polycorn.server.http.events import EndOfMessage, Request

    conn = FastConnection()
    assert conn._parser is None  # not per connection: the compiled path needs none
    for n in range(3):
        conn.receive_data(b"GET /%d HTTP/1.1\r\nHost: h\r\nX-N: %d\r\n\r\n" % (n, n))
        request = conn.next_event()
        assert type(request) is Request and request.target == b"/%d" % n
        assert request.headers == ((b"host", b"h"), (b"x-n", b"%d" % n))
        if n == 0:
            first_parser = conn._parser
        assert conn._parser is first_parser  # made once, reused with fresh tokens
        assert type(conn.next_event()) is EndOfMessage
        conn.start_response(200, b"OK", [(b"Content-Length", b"0")])
        conn.end_response()
        conn.start_next_cycle()
