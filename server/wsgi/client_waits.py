"""How a single-threaded worker waits on its client: in short slices, beating between them.

The sync worker has one thread: while it waits in recv() or send() on a client its
loop does not turn. It used to wait as long as --timeout (Gunicorn's socket timeout)
without a heartbeat, so one silent client (a browser's speculative preconnection),
a slow upload, a slow reader or a client starved of CPU took it to the master's limit,
and the master killed a worker that was serving. Here each wait lasts at most one
slice (the socket timeout, well inside --timeout), and the worker beats after every
slice and every byte moved; the client's own limits are deadlines instead: its request
head within --timeout of the accept, and never --timeout without a byte moved. Only
waiting on the client beats: a worker stuck in the app still misses its heartbeat.

A slow reader moves bytes long before send() returns: the kernel wakes a writer only
once a good part of its send buffer (megabytes) is free. So a send that waited a whole
slice asks the kernel how much is still unsent (SIOCOUTQ), and a smaller figure than
the last one is progress too.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import termios
import time
from collections.abc import Callable
from typing import BinaryIO

_monotonic = time.monotonic


class ClientWaits:
    """The waiting policy of one worker: its heartbeat, the slice and the patience."""

    __slots__ = ("heartbeat", "slice", "patience")

    def __init__(self, heartbeat: Callable[[], None], slice_: float, patience: float) -> None:
        if not 0 < slice_ <= patience:
            raise ValueError(f"a wait slice ({slice_}s) must be positive and at most the "
                             f"patience ({patience}s)")
        self.heartbeat = heartbeat
        self.slice = slice_
        self.patience = patience

    def prepare(self, sock: socket.socket) -> None:
        """Give a fresh client socket the slice as its timeout."""
        sock.settimeout(self.slice)

    def head_deadline(self) -> float:
        """When a request head that starts arriving now must be complete."""
        return _monotonic() + self.patience

    def recv(self, sock: socket.socket, size: int, deadline: float | None = None) -> bytes:
        """recv() that beats while it waits; TimeoutError after `patience` with no byte,
        or once `deadline` (the request head's) has passed."""
        if deadline is not None and _monotonic() >= deadline:
            raise TimeoutError("request head not complete within --timeout")
        give_up = 0.0
        while True:
            try:
                data = sock.recv(size)
            except TimeoutError:
                self.heartbeat()
                now = _monotonic()
                if not give_up:  # the wait began one slice ago
                    give_up = now - self.slice + self.patience
                    if deadline is not None:
                        give_up = min(give_up, deadline)
                if now >= give_up:
                    raise
                continue
            self.heartbeat()
            return data

    def sendall(self, sock: socket.socket, data: bytes) -> None:
        """sendall() that beats while it waits and on every byte moved.

        sock.sendall() would do: but since Python 3.5 its timeout bounds the whole
        call, so a large response to a steady but slow reader would fail after one slice.
        """
        try:
            sent = sock.send(data)
        except TimeoutError:
            sent = 0
        if sent == len(data):
            return  # the usual case: one system call, as sendall
        view = memoryview(data)[sent:]
        give_up = _monotonic() + self.patience
        unsent = _unsent(sock)
        while view:
            try:
                sent = sock.send(view)
            except TimeoutError:
                self.heartbeat()
                unsent, moved = _unsent(sock), unsent
                if unsent < moved:  # the client read some: that is progress
                    give_up = _monotonic() + self.patience
                elif _monotonic() >= give_up:
                    raise
                continue
            view = view[sent:]
            self.heartbeat()
            give_up = _monotonic() + self.patience
            unsent = _unsent(sock)  # what we just queued counts from here

    def sendfile(self, sock: socket.socket, file: BinaryIO, offset: int, count: int) -> int:
        """os.sendfile of count bytes from offset, beating as sendall does; bytes sent
        (fewer than count only at the end of the file).

        socket.sendfile() would wait through the whole file without a beat.
        """
        sock_fd, file_fd = sock.fileno(), file.fileno()
        sent = 0
        give_up = _monotonic() + self.patience
        unsent = _unsent(sock)
        poller = select.poll()
        poller.register(sock_fd, select.POLLOUT)
        while sent < count:
            try:
                n = os.sendfile(sock_fd, file_fd, offset + sent, count - sent)
            except BlockingIOError:  # the socket is non-blocking under its timeout
                if not poller.poll(self.slice * 1000):
                    self.heartbeat()
                    unsent, moved = _unsent(sock), unsent
                    if unsent < moved:
                        give_up = _monotonic() + self.patience
                    elif _monotonic() >= give_up:
                        raise TimeoutError("client read nothing for --timeout") from None
                continue
            if n == 0:
                break  # end of file
            sent += n
            self.heartbeat()
            give_up = _monotonic() + self.patience
            unsent = _unsent(sock)
        return sent


_INT = struct.Struct("i")


def _unsent(sock: socket.socket) -> int:
    """Bytes in the socket's send queue not yet acknowledged by the peer (SIOCOUTQ,
    the same request as TIOCOUTQ); 0 when the kernel cannot say (no progress seen)."""
    try:
        return _INT.unpack(fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(_INT.size)))[0]
    except (OSError, ValueError):
        return 0
