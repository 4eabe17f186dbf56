"""wsgi.input: the request body as a read-only file, pulled through a callable.

The pull callable returns the next piece of body and b"" at its end; once the end
is seen nothing more is pulled, so a read can never reach into the next pipelined
request. The 100 Continue interim response is sent just before the first pull.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator


class IncompleteBodyError(OSError):
    """The request body ended before its declared end (client closed, reset or timed out).

    Raised to the application instead of a short read: a truncated upload must never
    look complete. An OSError, like the socket errors frameworks already handle.
    """


class WSGIInput:
    """The wsgi.input file of one request (PEP 3333 section "Input and Error Streams")."""

    __slots__ = ("_pull", "_send_continue", "_buffer", "_ended", "bytes_read")

    def __init__(self, pull: Callable[[], bytes],
                 send_continue: Callable[[], None] | None = None) -> None:
        self._pull = pull
        # Called once, before the first pull: a client that sent "Expect: 100-continue"
        # waits for it before sending the body (RFC 9110 section 10.1.1). An app that
        # never reads the body never triggers it, so the client is spared the upload.
        self._send_continue = send_continue
        self._buffer = bytearray()  # pulled but not yet returned to the app
        self._ended = False
        self.bytes_read = 0  # handed to the application so far

    @classmethod
    def from_bytes(cls, body: bytes) -> WSGIInput:
        """An input over a body already fully buffered (the event worker's case)."""
        stream = cls(_no_more_body)
        stream._buffer += body
        stream._ended = True
        return stream

    @property
    def finished(self) -> bool:
        """The end of the body has been received (bytes may remain unread in the buffer)."""
        return self._ended

    @property
    def continue_pending(self) -> bool:
        """The client waits for 100 Continue that was never sent (the body was not read)."""
        return self._send_continue is not None and not self._ended

    def _fill(self) -> bool:
        """Pull one more piece into the buffer; False at the end of the body."""
        if self._ended:
            return False
        if self._send_continue is not None:
            send, self._send_continue = self._send_continue, None
            send()
        data = self._pull()
        if not data:
            self._ended = True
            return False
        self._buffer += data
        return True

    def _take(self, size: int) -> bytes:
        if size >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
        self.bytes_read += len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        """Up to size bytes; fewer only at the end of the body. No size (or < 0): all the rest."""
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, limit: int | None = -1) -> bytes:
        """One line including its b"\\n", at most limit bytes when limit >= 0."""
        if limit is None:
            limit = -1
        scanned = 0  # never rescan bytes already searched for the newline
        while True:
            end = self._buffer.find(b"\n", scanned)
            if end != -1:
                size = end + 1
                break
            scanned = len(self._buffer)
            if 0 <= limit <= scanned or not self._fill():
                size = scanned
                break
        if 0 <= limit < size:
            size = limit
        return self._take(size)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """Lines until the end, or until their total size reaches hint (when hint > 0)."""
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def drain(self, limit: int) -> bool:
        """Discard the unread rest of the body, reading at most limit more bytes.

        True when the whole body has been consumed, so the connection can carry
        another request; False when more than limit bytes remained, or when the
        client still waits for 100 Continue: asking for a body only to discard it
        wastes its upload, and whether it will send one unasked is unknowable.
        """
        if self.continue_pending:
            return False
        self._buffer.clear()
        budget = limit
        while budget >= 0:
            if not self._fill():
                return True
            budget -= len(self._buffer)
            self._buffer.clear()
        return False


def _no_more_body() -> bytes:
    return b""


# The wsgi.input of every request without a body: an empty WSGIInput never changes
# (its reads return b"", its slots refuse new attributes), so one serves them all.
EMPTY_INPUT = WSGIInput.from_bytes(b"")
