"""The sync worker's waits on a client, over real loopback sockets: beats while waiting,
patience for a silent client, a deadline for a trickled head, progress of a slow reader."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from polycorn.server.wsgi.client_waits import ClientWaits

SLICE = 0.1
PATIENCE = 0.6


class Beats:
    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self) -> None:
        self.times.append(time.monotonic())

    def longest_gap(self, since: float, until: float) -> float:
        marks = [since, *[t for t in self.times if since <= t <= until], until]
        return max(b - a for a, b in zip(marks, marks[1:], strict=False))


def connected(rcvbuf: int = 0, sndbuf: int = 0) -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        if rcvbuf:  # before connect(): the window scale is chosen at the handshake
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    if sndbuf:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return server, client


@pytest.fixture
def pair():
    """(server side, client side) of one loopback TCP connection."""
    server, client = connected()
    yield server, client
    server.close()
    client.close()


@pytest.fixture
def slow_pair():
    """The same with a small receive buffer. The sender's own (up to 4 MB) fills at once,
    and the kernel wakes it only once a third of it is free: at SLOW_RATE, 0.8-1 s
    between two returns of send(), while the send queue shrinks at every slice
    (measured here). A small send buffer would not do: the reader's window updates,
    the only progress a sender can see, then come no sooner than send() returns."""
    server, client = connected(rcvbuf=4096)
    # A fixed send buffer (the kernel doubles it: 2 MB), not the autotuned one: grown to
    # 4 MB, it took nearly the whole 4 MB response at once, and sendall returned in
    # 1.0 s, under the patience's four times (CI, twice, with more tests beside it).
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1_000_000)
    yield server, client
    server.close()
    client.close()


def slow_reader(sock: socket.socket, total: int, rate: float,
                sent: threading.Event) -> threading.Thread:
    """Reads total bytes at `rate` bytes/s; at full speed once `sent` is set (what the
    sender left in the buffers)."""
    got = []

    def run() -> None:
        start = time.monotonic()
        received = 0
        while received < total:
            if received > rate * (time.monotonic() - start) and not sent.is_set():
                time.sleep(0.02)
                continue
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += len(chunk)
        got.append(received)

    t = threading.Thread(target=run, daemon=True)
    t.got = got  # type: ignore[attr-defined]
    t.start()
    return t


SLOW_TOTAL = 4_000_000
SLOW_RATE = 1_000_000  # bytes/s
# A slow reader's waits: patience well under the ~0.9 s send() waits of slow_pair, so
# only the progress read from the send queue lets the response through.
SLOW_SLICE, SLOW_PATIENCE = 0.05, 0.35


def test_a_silent_client_is_waited_for_with_a_beat_every_slice(pair):
    server, _ = pair
    beats = Beats()
    waits = ClientWaits(beats, SLICE, PATIENCE)
    waits.prepare(server)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        waits.recv(server, 1024)
    took = time.monotonic() - start
    assert PATIENCE - 0.01 <= took < PATIENCE + 1.0
    # A beat at most every slice (plus scheduling), never the whole wait without one.
    assert beats.longest_gap(start, start + took) < SLICE + 0.5


def test_data_ends_the_wait_with_a_beat(pair):
    server, client = pair
    beats = Beats()
    waits = ClientWaits(beats, SLICE, PATIENCE)
    waits.prepare(server)
    threading.Timer(0.3, client.sendall, (b"GET",)).start()
    assert waits.recv(server, 1024) == b"GET"
    assert len(beats.times) >= 2  # the slices waited, and the data


def test_a_trickled_head_stops_at_its_deadline(pair):
    # One byte every half slice never lets a slice pass empty: only the deadline ends it.
    server, client = pair
    waits = ClientWaits(Beats(), SLICE, PATIENCE)
    waits.prepare(server)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(SLICE / 2):
            try:
                client.send(b"x")
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    start = time.monotonic()
    deadline = waits.head_deadline()
    try:
        with pytest.raises(TimeoutError):
            while True:
                waits.recv(server, 1024, deadline)
    finally:
        stop.set()
    assert PATIENCE - 0.01 <= time.monotonic() - start < PATIENCE + 1.0


def test_a_slow_steady_reader_gets_everything_past_the_patience(slow_pair):
    # send() returns only once a megabyte of the send buffer is free, long after the
    # reader moved its first bytes: progress is read from the kernel's send queue.
    server, client = slow_pair
    beats = Beats()
    waits = ClientWaits(beats, SLOW_SLICE, SLOW_PATIENCE)
    waits.prepare(server)
    total = SLOW_TOTAL
    sent = threading.Event()
    reader = slow_reader(client, total, SLOW_RATE, sent)
    start = time.monotonic()
    waits.sendall(server, b"x" * total)
    took = time.monotonic() - start
    sent.set()
    reader.join(30)
    assert reader.got == [total]
    assert took > 4 * SLOW_PATIENCE  # it did wait on the reader, past the patience
    assert beats.longest_gap(start, start + took) < SLOW_SLICE + 0.5


def test_a_reader_that_reads_nothing_is_given_up_after_the_patience(pair):
    server, _ = pair
    waits = ClientWaits(Beats(), SLICE, PATIENCE)
    waits.prepare(server)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        waits.sendall(server, b"x" * (64 * 1024 * 1024))
    assert PATIENCE - 0.01 <= time.monotonic() - start < PATIENCE + 1.0


def test_sendfile_to_a_slow_reader_beats_and_completes(slow_pair, tmp_path):
    server, client = slow_pair
    path = tmp_path / "f.bin"
    total = SLOW_TOTAL
    path.write_bytes(b"y" * (total + 100))
    beats = Beats()
    waits = ClientWaits(beats, SLOW_SLICE, SLOW_PATIENCE)
    waits.prepare(server)
    sent = threading.Event()
    reader = slow_reader(client, total, SLOW_RATE, sent)
    start = time.monotonic()
    with open(path, "rb") as f:
        assert waits.sendfile(server, f, 100, total) == total
    took = time.monotonic() - start
    sent.set()
    reader.join(30)
    assert reader.got == [total]
    assert beats.longest_gap(start, start + took) < SLOW_SLICE + 0.5


def test_sendfile_stops_at_the_end_of_a_short_file(pair, tmp_path):
    server, client = pair
    path = tmp_path / "short.bin"
    path.write_bytes(b"z" * 1000)
    waits = ClientWaits(Beats(), SLICE, PATIENCE)
    waits.prepare(server)
    with open(path, "rb") as f:
        assert waits.sendfile(server, f, 0, 5000) == 1000
    client.settimeout(2)
    assert client.recv(4096) == b"z" * 1000


def test_the_slice_must_fit_in_the_patience():
    with pytest.raises(ValueError):
        ClientWaits(Beats(), 2.0, 1.0)
