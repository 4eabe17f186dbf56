"""The statsd sink: Gunicorn's metric names and types, so its dashboards keep working.

Names are <prefix>gunicorn.<name> as Gunicorn's statsd logger sends them:
request.duration (timer, ms), requests and request.status.<code> (counters),
workers (gauge), backlog (histogram), log.<level> (counters); Polycorn's events
are <prefix>polycorn.<event> counters. Counters carry Gunicorn's "|@1.0" sample
rate and, with --dogstatsd-tags, every line ends with "|#<tags>".

Request metrics are batched, newline-separated, into datagrams of at most
MAX_PAYLOAD bytes (the multi-metric packet statsd, Telegraf, the Datadog agent and
statsd_exporter all read), as statsd clients do: a timer line per request, and
the counters summed over the batch (gunicorn.requests:25 counts as 25 ones do),
so one send, and one wake-up of the agent, per 20-30 requests instead of three
per request (Gunicorn's), which cost a worker several microseconds each. A batch waits at most
FLUSH_INTERVAL while requests come, and until the worker's next heartbeat (tick(),
at most a second) when they stop; close() sends the rest when a worker exits. The
rare metrics (worker gauge, backlog, log levels, events) are sent at once.
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
        # The batch: one timer line per request (statsd computes the percentiles), and
        # the counters summed over it (requests:9 is nine requests: the same sums).
        self._timers: list[str] = []
        self._requests = 0
        self._statuses: dict[int, int] = {}
        self._batch_size = 0  # bytes of the datagram so far, counter lines included
        self._send_by = 0.0  # monotonic deadline of the batch's first request
        self._lock = threading.Lock()  # the thread worker's threads share the batch
        # A counter line's length, less the digits of its value: "<g>requests:|c|@1.0<t>\n".
        self._counter_size = len(g) + len(":|c|@1.0") + len(t) + 1 + 6

    def request_finished(self, method: str, status: int, duration: float,
                         bytes_out: int) -> None:
        line = f"{self._duration_head}{duration * 1000:.3f}{self._duration_tail}"
        now = time.monotonic()
        with self._lock:
            added = len(line) + 1
            if status not in self._statuses:
                added += self._counter_size + len("request.status.000")
            if self._requests and self._batch_size + added > MAX_PAYLOAD:
                self._send_batch()
                added = len(line) + 1 + self._counter_size + len("request.status.000")
            if not self._requests:
                self._send_by = now + FLUSH_INTERVAL
                added += self._counter_size + len("requests")
            self._timers.append(line)
            self._requests += 1
            self._statuses[status] = self._statuses.get(status, 0) + 1
            self._batch_size += added
            if now >= self._send_by:
                self._send_batch()

    def tick(self) -> None:
        if self._requests and time.monotonic() >= self._send_by:
            with self._lock:
                if self._requests:
                    self._send_batch()

    def _send_batch(self) -> None:
        # Under self._lock; the send never blocks.
        g, t = self._gunicorn, self._tags
        lines = self._timers
        lines.append(f"{g}requests:{self._requests}|c|@1.0{t}")
        lines.extend(f"{g}request.status.{code}:{n}|c|@1.0{t}"
                     for code, n in self._statuses.items())
        data = "\n".join(lines).encode()
        self._timers = []
        self._requests = 0
        self._statuses = {}
        self._batch_size = 0
        self.sender.send(data)

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
            if self._requests:
                self._send_batch()
        self.sender.close()


def statsd_sink(cfg: Any) -> StatsdSink | None:
    """The sink --statsd-host asks for, or None when it is unset."""
    address = getattr(cfg, "statsd_host", None)
    if address is None:
        return None
    return StatsdSink(DatagramSender(address),
                      getattr(cfg, "statsd_prefix", "") or "",
                      getattr(cfg, "dogstatsd_tags", "") or "")
