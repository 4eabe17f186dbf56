"""Microseconds per request through one connection object: bytes in, response bytes out, no sockets.

The event worker's calls for a hello request, in its order (receive_data, the
Request, its EndOfMessage, respond_whole, keep_alive, start_next_cycle, NEED_DATA,
trailing_data), timed for FastConnection (llhttp) and ServerConnection (pure), on
one kept-alive connection and on a new connection per request. A tool, not a test:
figures on a shared machine are reported, never asserted; the classes are timed in
interleaved rounds and the median of the rounds' CPU time per request is given.

    .venv/bin/python -m loadtests.conn_bench [--requests N] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import time

from polycorn.server.http.connection import ServerConnection
from polycorn.server.http.events import NEED_DATA, EndOfMessage, Request

try:
    from polycorn.server.http.fast import FastConnection
except ImportError:  # httptools not installed
    FastConnection = None

WRK_HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
# What a browser sends behind a proxy: many fields, none of them framing but Host.
BROWSER_HEAD = (
    b"GET /app/page?id=7&sort=asc HTTP/1.1\r\nHost: shop.example.com\r\nAccept-Language: en\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    b"Accept: text/html,*/*;q=0.8\r\nAccept-Encoding: gzip, br\r\nCookie: session=abc123\r\n"
    b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n")
HELLO = b"Hello, World!\n"
HELLO_HEADERS = [(b"Content-Type", b"text/plain"), (b"Content-Length", b"14")]


def serve(conn, head: bytes) -> bytes:
    """One request cycle as the event worker runs it (event_protocol._process/_respond)."""
    conn.receive_data(head)
    request = conn.next_event()
    assert request.__class__ is Request
    assert conn.next_event().__class__ is EndOfMessage
    out = conn.respond_whole(200, b"OK", list(HELLO_HEADERS), HELLO)
    if conn.keep_alive:
        conn.start_next_cycle()
    assert conn.next_event() is NEED_DATA
    conn.trailing_data  # noqa: B018 (the worker reads it at NEED_DATA)
    return out


def kept_alive(conn_class: type, head: bytes, requests: int) -> float:
    conn = conn_class()
    start = time.process_time()
    for _ in range(requests):
        serve(conn, head)
    return (time.process_time() - start) / requests


def new_connection_each(conn_class: type, head: bytes, requests: int) -> float:
    start = time.process_time()
    for _ in range(requests):
        serve(conn_class(), head)
    return (time.process_time() - start) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    classes = [c for c in (FastConnection, ServerConnection) if c is not None]
    cases = [(c, name, head, way) for c in classes
             for name, head in (("wrk head", WRK_HEAD), ("browser head", BROWSER_HEAD))
             for way in (kept_alive, new_connection_each)]
    times: dict[tuple, list[float]] = {case: [] for case in cases}
    for case in cases:  # warm the head caches and the interpreter
        case[3](case[0], case[2], 1000)
    for _ in range(args.rounds):
        for case in cases:
            times[case].append(case[3](case[0], case[2], args.requests))
    for case in cases:
        conn_class, name, _, way = case
        figures = times[case]
        print(f"{conn_class.__name__:17} {name:13} {way.__name__:20} "
              f"median {statistics.median(figures) * 1e6:6.2f} us  "
              f"min {min(figures) * 1e6:6.2f} us")


if __name__ == "__main__":
    main()
