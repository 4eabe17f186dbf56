"""Replays the request corpus (tests/corpus) through ServerConnection under many chunkings.

Each case runs whole, one byte at a time, in seeded random splits, and followed
by a pipelined request: a valid case must yield exactly its expected events and
leave the next request parseable; an invalid one must raise its status and then
yield nothing more, whatever follows it.
"""

from __future__ import annotations

import random

import pytest
from corpus import Invalid, Valid
from corpus.invalid import CASES as INVALID
from corpus.valid import CASES as VALID
from polycorn.server.http.connection import ServerConnection
from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Request,
)

PIPELINED = b"GET /second HTTP/1.1\r\nHost: example.com\r\n\r\n"
RANDOM_SPLITS = 3


def whole(raw: bytes, rng: random.Random) -> list[bytes]:
    return [raw]


def bytewise(raw: bytes, rng: random.Random) -> list[bytes]:
    return [raw[i : i + 1] for i in range(len(raw))]


def random_split(raw: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 12))))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


SPLITTERS = {"whole": whole, "bytewise": bytewise,
             **{f"random{i}": random_split for i in range(RANDOM_SPLITS)}}


def pull(conn: ServerConnection, events: list) -> None:
    """Collect events until the connection needs data, pauses, or reports the close."""
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is PAUSED:
            return
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return


def feed(conn: ServerConnection, chunks: list[bytes], events: list, eof: bool = False) -> None:
    for chunk in chunks:
        conn.receive_data(chunk)
        pull(conn, events)
    if eof:
        conn.receive_data(b"")
        pull(conn, events)


def assert_exchange(case: Valid, events: list) -> None:
    """events must be the case's Request, its body as non-empty Data, then EndOfMessage."""
    assert events[0] == case.request
    assert events[-1] == EndOfMessage(case.trailers)
    pieces = events[1:-1]
    assert all(isinstance(e, Data) and e.data for e in pieces), pieces
    assert b"".join(e.data for e in pieces) == case.body


def rng_for(case_name: str, mode: str) -> random.Random:
    return random.Random(f"{case_name}/{mode}")  # str seeds are stable across runs


@pytest.mark.parametrize("mode", SPLITTERS)
@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_valid_request(case: Valid, mode: str) -> None:
    conn = ServerConnection(case.limits)
    events: list = []
    feed(conn, SPLITTERS[mode](case.raw, rng_for(case.name, mode)), events)
    assert_exchange(case, events)
    assert conn.next_event() is PAUSED
    assert conn.trailing_data == (b"", False)


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_valid_request_then_pipelined(case: Valid) -> None:
    conn = ServerConnection(case.limits)
    events: list = []
    feed(conn, random_split(case.raw + PIPELINED, rng_for(case.name, "pipelined")), events)
    assert_exchange(case, events)
    assert conn.next_event() is PAUSED  # the next request waits for start_next_cycle
    conn.start_response(200, b"OK", [(b"Content-Length", b"0")])
    conn.end_response()
    if not case.request.keep_alive:
        assert not conn.keep_alive
        assert conn.trailing_data == (PIPELINED, False)
        return
    assert conn.keep_alive
    conn.start_next_cycle()
    second: list = []
    pull(conn, second)
    assert second == [
        Request(b"GET", b"/second", b"1.1", ((b"host", b"example.com"),)),
        EndOfMessage(),
    ]


def refusal(case: Invalid, chunks: list[bytes]) -> tuple[int, list]:
    """Feed the chunks; return the status raised and the events seen before it."""
    conn = ServerConnection(case.limits)
    events: list = []
    with pytest.raises(RemoteProtocolError) as raised:
        feed(conn, chunks, events, eof=case.eof)
    status = raised.value.status
    # Dead for good: more bytes are never parsed, every call raises the same status.
    conn.receive_data(PIPELINED)
    for _ in range(2):
        with pytest.raises(RemoteProtocolError) as again:
            conn.next_event()
        assert again.value.status == status
    assert not conn.keep_alive
    return status, events


def stage(events: list) -> list[type]:
    """The kinds of event before the error: nothing, or the Request (and perhaps body)."""
    return [type(e) for e in events if not isinstance(e, Data)]


@pytest.mark.parametrize("mode", SPLITTERS)
@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.name)
def test_invalid_request(case: Invalid, mode: str) -> None:
    status, events = refusal(case, SPLITTERS[mode](case.raw, rng_for(case.name, mode)))
    assert status == case.status
    assert stage(events) in ([], [Request])


@pytest.mark.parametrize("case", [c for c in INVALID if not c.eof], ids=lambda c: c.name)
def test_invalid_request_then_pipelined(case: Invalid) -> None:
    """The bytes after a bad request never produce an event."""
    _, alone = refusal(case, [case.raw])
    status, events = refusal(case, random_split(case.raw + PIPELINED,
                                                rng_for(case.name, "pipelined")))
    assert status == case.status
    assert stage(events) == stage(alone)


def test_corpus_size_and_names() -> None:
    names = [c.name for c in VALID] + [c.name for c in INVALID]
    assert len(names) == len(set(names)), "case names must be unique"
    assert len(names) >= 150
    assert all(n.startswith(("rfc9110-", "rfc9112-", "limits-")) for n in names)
