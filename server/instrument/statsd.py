"""The statsd sink: Gunicorn's metric names and types, so its dashboards keep working.

Names are <prefix>gunicorn.<name> as Gunicorn's statsd logger sends them:
request.duration (timer, ms), requests and request.status.<code> (counters),
workers (gauge), backlog (histogram), log.<level> (counters); Polycorn's events
are <prefix>polycorn.<event> counters. Counters carry Gunicorn's "|@1.0" sample
rate and, with --dogstatsd-tags, every line ends with "|#<tags>".

Request metrics are batched, newline-separated, into datagrams of at most
MAX_PAYLOAD bytes (the multi-metric packet statsd, Telegraf, the Datadog agent and
statsd_exporter all read), as statsd clients do: a timer line per request, and
the counters summed over the batch (gunicorn.requests:25 counts as 25 ones do).
That is one send, and one wake-up of the agent, per 20-30 requests instead of
three per request (Gunicorn's), and a request only appends to a list: the
formatting happens once per batch. A batch is sent when full, and otherwise by
the worker's heartbeat (tick(), at least once a second) once it is FLUSH_INTERVAL
old; close() sends the rest when a worker exits. The rare metrics (worker
gauge, backlog, log levels, events) are sent at once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from polycorn.server.instrument.datagram import DatagramSender
from polycorn.server.instrument.observer import Observer

# Bytes of metrics per datagram: fits a 1500-byte Ethernet frame with IP and UDP
# headers (the common statsd client default), so no datagram is fragmented.
MAX_PAYLOAD = 1432
FLUSH_INTERVAL = 0.25  # seconds a batch may wait while requests keep coming


def normalize_prefix(prefix: str | None) -> str:
    """Gunicorn's rule: a non-empty prefix ends with exactly one dot ("app" -> "app.",
    "app.." -> "app.").

    Gunicorn's own regular expression leaves a one-character prefix without its dot
    ("a" gives "agunicorn.requests"); here it gets one like any other.
    """
    stripped = (prefix or "").rstrip(".")
    return stripped + "." if stripped else ""


class StatsdSink(Observer):
    def __init__(self, sender: DatagramSender, prefix: str = "", tags: str = "") -> None:
        self.sender = sender
        prefix = normalize_prefix(prefix)
        g = prefix + "gunicorn."
        t = "|#" + tags if tags else ""
        self._polycorn = prefix + "polycorn."
        self._tags = t
        self._gunicorn = g
        self._duration_head = f"{g}request.duration:"
        self._duration_tail = f"|ms{t}"
        # The batch: (duration, status) per request, formatted when sent: one timer line
        # per request (statsd computes the percentiles) and the counters summed over it.
        self._pending: list[tuple[float, int]] = []
        self._send_by = 0.0  # monotonic deadline of the batch's first request
        self._lock = threading.Lock()  # the thread worker's threads share the batch
        timer = len(self._duration_head) + len("99999.999") + len(self._duration_tail) + 1
        counter = len(g) + len("request.status.000:99999|c|@1.0") + len(t) + 1
        # Requests per datagram, leaving room for the requests counter and two statuses.
        self.per_datagram = max(1, (MAX_PAYLOAD - 3 * counter) // timer)

    def request_finished(self, method: str, status: int, duration: float,
                         bytes_out: int, bytes_in: int = 0) -> None:
        with self._lock:
            pending = self._pending
            pending.append((duration, status))
            if len(pending) == 1:
                self._send_by = time.monotonic() + FLUSH_INTERVAL
            elif len(pending) >= self.per_datagram:
                self._send_batch()

    def tick(self) -> None:
        if self._pending and time.monotonic() >= self._send_by:
            with self._lock:
                if self._pending:
                    self._send_batch()

    def _send_batch(self) -> None:
        # Under self._lock; the sends never block.
        batch, self._pending = self._pending, []
        g, t, head, tail = self._gunicorn, self._tags, self._duration_head, self._duration_tail
        statuses: dict[int, int] = {}
        lines = []
        for duration, status in batch:
            lines.append(f"{head}{duration * 1000:.3f}{tail}")
            statuses[status] = statuses.get(status, 0) + 1
        lines.append(f"{g}requests:{len(batch)}|c|@1.0{t}")
        lines.extend(f"{g}request.status.{code}:{n}|c|@1.0{t}" for code, n in statuses.items())
        for packet in packets(lines):
            self.sender.send(packet)

    def workers(self, count: int) -> None:
        self.sender.send(f"{self._gunicorn}workers:{count}|g{self._tags}".encode())

    def backlog(self, queued: int) -> None:
        self.sender.send(f"{self._gunicorn}backlog:{queued}|h{self._tags}".encode())

    def log_record(self, level: str) -> None:
        self.sender.send(f"{self._gunicorn}log.{level}:1|c|@1.0{self._tags}".encode())

    def event(self, name: str, reason: str = "") -> None:
        self.sender.send(f"{self._polycorn}{name}:1|c|@1.0{self._tags}".encode())

    def close(self) -> None:
        with self._lock:
            if self._pending:
                self._send_batch()
        self.sender.close()


def packets(lines: list[str]) -> list[bytes]:
    """Lines joined by newlines into datagrams of at most MAX_PAYLOAD bytes (a longer
    line travels alone)."""
    out: list[bytes] = []
    current: list[str] = []
    size = 0
    for line in lines:
        if current and size + len(line) > MAX_PAYLOAD:
            out.append("\n".join(current).encode())
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        out.append("\n".join(current).encode())
    return out


def statsd_sink(cfg: Any) -> StatsdSink | None:
    """The sink --statsd-host asks for, or None when it is unset."""
    address = getattr(cfg, "statsd_host", None)
    if address is None:
        return None
    return StatsdSink(DatagramSender(address),
                      getattr(cfg, "statsd_prefix", "") or "",
                      getattr(cfg, "dogstatsd_tags", "") or "")
