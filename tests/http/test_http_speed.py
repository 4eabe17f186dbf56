"""Guards the parser's speed against Gunicorn's pure-Python parser, measured side by side.

Every request of the sync and thread workers runs through ServerConnection, so a
slowdown here is a slowdown of the server. Both parsers run the same browser-like
request on the same machine, interleaved; we measure about 3x ahead, and assert
only that we stay ahead, which a busy machine cannot turn into a false failure.
"""

from __future__ import annotations

import time

from gunicorn.config import Config
from gunicorn.http.parser import RequestParser
from polycorn.server.http.connection import ServerConnection
from polycorn.server.http.events import EndOfMessage, Request

REQUEST = (
    b"GET /app/page?id=7&sort=asc HTTP/1.1\r\n"
    b"Host: shop.example.com:8080\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Cookie: session=abc123; theme=dark\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
)
ROUNDS = 2000


def ours() -> None:
    for _ in range(ROUNDS):
        conn = ServerConnection()
        conn.receive_data(REQUEST)
        assert isinstance(conn.next_event(), Request)
        assert isinstance(conn.next_event(), EndOfMessage)


def gunicorns(cfg: Config = Config()) -> None:  # noqa: B008 - built once, on purpose
    for _ in range(ROUNDS):
        request = next(RequestParser(cfg, iter([REQUEST]), ("127.0.0.1", 1)))
        assert request.method == "GET"


def best_time(run) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def test_parser_is_faster_than_gunicorns() -> None:
    gunicorns()  # warm both up (imports, caches) before timing
    ours()
    theirs, mine = best_time(gunicorns), best_time(ours)
    assert mine < theirs, f"ours {mine * 1e6 / ROUNDS:.1f} us/request, Gunicorn {theirs * 1e6 / ROUNDS:.1f}"
