"""WSGIInput: every read method, the hard stop at the end of the body, 100-continue once."""

from __future__ import annotations

import pytest
from polycorn.server.wsgi.body import IncompleteBodyError, WSGIInput

BODY = b"line one\nline two\n\nlast line without newline"


class Source:
    """A body delivered in the given pieces, then the end; pulls past the end are an error."""

    def __init__(self, pieces: list[bytes], fail_after: bool = False) -> None:
        self.pieces = list(pieces)
        self.pulls = 0
        self.ended = False
        self.fail_after = fail_after
        self.continues = 0

    def pull(self) -> bytes:
        assert not self.ended, "pulled past the end of the body (into the next request)"
        self.pulls += 1
        if self.pieces:
            return self.pieces.pop(0)
        if self.fail_after:
            raise IncompleteBodyError("client went away")
        self.ended = True
        return b""

    def send_continue(self) -> None:
        self.continues += 1


def chunkings(data: bytes) -> list[list[bytes]]:
    return [[data], [bytes([b]) for b in data], [data[:5], data[5:17], data[17:]]]


def make(pieces: list[bytes], **kw) -> tuple[WSGIInput, Source]:
    src = Source(pieces, **kw)
    return WSGIInput(src.pull, src.send_continue), src


@pytest.mark.parametrize("pieces", chunkings(BODY))
def test_read_all(pieces):
    stream, src = make(pieces)
    assert stream.read() == BODY
    assert stream.read() == b"" and stream.read(10) == b""
    assert stream.finished and stream.bytes_read == len(BODY)
    assert src.continues == 1


@pytest.mark.parametrize("size_arg", [-1, None])
def test_read_negative_or_none_reads_everything(size_arg):
    stream, _ = make([b"ab", b"cd"])
    assert stream.read(size_arg) == b"abcd"


@pytest.mark.parametrize("pieces", chunkings(BODY))
def test_read_n_fills_n_unless_at_end(pieces):
    stream, _ = make(pieces)
    got = []
    while True:
        part = stream.read(7)
        if not part:
            break
        got.append(part)
    assert b"".join(got) == BODY
    assert all(len(p) == 7 for p in got[:-1])  # short only at the end


def test_read_zero_does_not_pull_or_send_continue():
    stream, src = make([b"abc"])
    assert stream.read(0) == b""
    assert stream.readline(0) == b""
    assert src.pulls == 0 and src.continues == 0


@pytest.mark.parametrize("pieces", chunkings(BODY))
def test_readline_and_iteration(pieces):
    stream, _ = make(pieces)
    assert stream.readline() == b"line one\n"
    assert list(stream) == [b"line two\n", b"\n", b"last line without newline"]
    stream, _ = make(pieces)
    assert [line for line in stream] == BODY.splitlines(keepends=True)


def test_readline_limit():
    stream, _ = make([b"abcdefgh\nxy"])
    assert stream.readline(3) == b"abc"
    assert stream.readline(100) == b"defgh\n"
    assert stream.readline(None) == b"xy"
    assert stream.readline() == b""


def test_readlines_hint():
    stream, _ = make(chunkings(BODY)[1])
    assert stream.readlines() == BODY.splitlines(keepends=True)
    stream, _ = make([BODY])
    assert stream.readlines(5) == [b"line one\n"]  # stops once the hint is reached
    assert stream.readlines(-1) == BODY.splitlines(keepends=True)[1:]


def test_hard_stop_at_end_of_body():
    stream, src = make([b"ab"])
    stream.read()
    pulls = src.pulls
    for call in (stream.read, stream.readline, stream.readlines, lambda: stream.read(5)):
        assert not call()
    assert src.pulls == pulls  # the Source asserts if pulled again after the end


def test_continue_sent_once_on_first_read():
    stream, src = make([b"a", b"b"])
    assert src.continues == 0
    stream.read(1)
    stream.read(1)
    stream.read()
    assert src.continues == 1


def test_no_continue_callback_means_none_sent():
    src = Source([b"x"])
    stream = WSGIInput(src.pull)
    assert stream.read() == b"x"


def test_body_ending_early_raises_not_short_read():
    stream, _ = make([b"partial"], fail_after=True)
    with pytest.raises(IncompleteBodyError):
        stream.read()
    stream, _ = make([b"partial"], fail_after=True)
    with pytest.raises(OSError):
        stream.read(100)
    stream, _ = make([b"no newline yet"], fail_after=True)
    with pytest.raises(IncompleteBodyError):
        stream.readline()


def test_from_bytes():
    stream = WSGIInput.from_bytes(b"a\nb")
    assert stream.finished
    assert stream.readline() == b"a\n"
    assert stream.read() == b"b"


def test_drain_within_limit_and_over_limit():
    stream, src = make([b"x" * 10, b"y" * 10])
    stream.read(3)
    assert stream.drain(100) is True and src.ended
    stream, src = make([b"x" * 100] * 10)
    assert stream.drain(150) is False and not src.ended


def test_drain_refuses_when_client_waits_for_continue():
    stream, src = make([b"body"])
    assert stream.drain(1000) is False
    assert src.continues == 0 and src.pulls == 0
