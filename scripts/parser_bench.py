"""Time our sans-IO request parser against Gunicorn's pure-Python parser, side by side.

Every request of the sync and thread workers runs through ServerConnection, so
this is the first place to look when those workers slow down. A tool, not a
test: timings on a shared machine are reported, never asserted.

    .venv/bin/python scripts/parser_bench.py [--rounds N]
"""

from __future__ import annotations

import argparse
import time

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


def ours(rounds: int) -> None:
    for _ in range(rounds):
        conn = ServerConnection()
        conn.receive_data(REQUEST)
        assert isinstance(conn.next_event(), Request)
        assert isinstance(conn.next_event(), EndOfMessage)


def gunicorns(rounds: int) -> None:
    from gunicorn.config import Config
    from gunicorn.http.parser import RequestParser

    cfg = Config()
    for _ in range(rounds):
        request = next(RequestParser(cfg, iter([REQUEST]), ("127.0.0.1", 1)))
        assert request.method == "GET"


def best_time(run, rounds: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run(rounds)
        best = min(best, time.perf_counter() - start)
    return best / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args()
    ours(100)
    gunicorns(100)
    mine, theirs = best_time(ours, args.rounds), best_time(gunicorns, args.rounds)
    print(f"polycorn parser: {mine * 1e6:.1f} us/request")
    print(f"gunicorn parser: {theirs * 1e6:.1f} us/request")
    print(f"ratio: {theirs / mine:.2f}x")


if __name__ == "__main__":
    main()
