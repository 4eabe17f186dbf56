"""The master's samples for the instruments: the worker gauge and the listen backlog.

sample() is called by the master's loop after it has managed its workers. It sends
gunicorn.workers when the count changed (or the instruments were rebuilt by a HUP),
as Gunicorn's arbiter does, and with --enable-backlog-metric the connections
waiting in the TCP listeners' accept queues, at most once a second.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from polycorn.server.instrument.layer import current

BACKLOG_INTERVAL = 1.0  # seconds between two backlog samples
# struct tcp_info (linux/tcp.h): eight u8 fields, then u32 fields; tcpi_unacked is the
# fifth u32, which on a listening socket is the accept queue's length (sk_ack_backlog).
_TCP_INFO = struct.Struct("8B5I")
_UNACKED = 12


class _Sampler:
    def __init__(self) -> None:
        self.sent_to: Any = None  # the Instruments the last worker count went to
        self.workers = -1
        self.states: dict[str, int] = {}
        self.backlog_at = 0.0


_sampler = _Sampler()


def sample(worker_count: int, listeners: Iterable[Any], cfg: Any,
           states: Callable[[], dict[str, int]] | None = None) -> None:
    """Report the worker count (and the workers by state) if it changed, and the backlog
    when it is due."""
    instruments = current()
    if not instruments.active:
        return
    fresh = instruments is not _sampler.sent_to
    if worker_count != _sampler.workers or fresh:
        _sampler.workers, _sampler.sent_to = worker_count, instruments
        instruments.workers(worker_count)
    if states is not None:
        counts = states()
        if counts != _sampler.states or fresh:
            _sampler.states = counts
            instruments.worker_states(counts)
    if getattr(cfg, "enable_backlog_metric", False):
        now = time.monotonic()
        if now >= _sampler.backlog_at:
            _sampler.backlog_at = now + BACKLOG_INTERVAL
            queued = backlog(listeners)
            if queued is not None:
                instruments.backlog(queued)


def backlog(listeners: Iterable[Any]) -> int | None:
    """Connections waiting to be accepted on the TCP listeners; None when none can tell
    (no TCP listener, or not Linux: unix sockets have no TCP_INFO)."""
    if not sys.platform.startswith("linux"):
        return None
    total, known = 0, False
    for listener in listeners:
        sock = getattr(listener, "sock", listener)
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
        except OSError:
            continue
        total += _TCP_INFO.unpack(info)[_UNACKED]
        known = True
    return total if known else None


def worker_exited(reason: str) -> None:
    """The master reaped a worker (reason: one of observer.WORKER_EXIT_REASONS)."""
    instruments = current()
    if instruments.active:
        instruments.worker_exited(reason)


def generation_ready(seconds: float) -> None:
    """This master's workers are all ready, `seconds` after the master started."""
    instruments = current()
    if instruments.active:
        instruments.generation_ready(seconds)
