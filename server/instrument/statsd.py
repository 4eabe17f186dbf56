"""The statsd sink: Gunicorn's metric names and types, so its dashboards keep working.

Names are <prefix>gunicorn.<name> as Gunicorn's statsd logger sends them:
request.duration (timer, ms), requests and request.status.<code> (counters),
workers (gauge), backlog (histogram), log.<level> (counters); Polycorn's events
are <prefix>polycorn.<event> counters. Counters carry Gunicorn's "|@1.0" sample
rate and, with --dogstatsd-tags, every line ends with "|#<tags>".

Request metrics are batched, newline-separated, into datagrams of at most
MAX_PAYLOAD bytes (the multi-metric packet statsd, Telegraf, the Datadog agent and
statsd_exporter all read), as statsd clients do: one send, and one wake-up of the
agent, per ten requests or so instead of three per request (Gunicorn's), which
costs a worker several microseconds each on loopback. A batch waits at most
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
        # One request's datagram is head + duration + middle + status + tail.
        self._request_head = f"{g}request.duration:"
        self._request_middle = f"|ms{t}\n{g}requests:1|c|@1.0{t}\n{g}request.status."
        self._request_tail = f":1|c|@1.0{t}"
        self._batch: list[str] = []
        self._batch_size = 0
        self._send_by = 0.0  # monotonic deadline of the batch's first line
        self._lock = threading.Lock()  # the thread worker's threads share the batch

    def request_finished(self, method: str, status: int, duration: float,
                         bytes_out: int) -> None:
        lines = (f"{self._request_head}{duration * 1000:.3f}{self._request_middle}"
                 f"{status}{self._request_tail}")
        now = time.monotonic()
        with self._lock:
            if self._batch and self._batch_size + len(lines) >= MAX_PAYLOAD:
                self._send_batch()
            if not self._batch:
                self._send_by = now + FLUSH_INTERVAL
            self._batch.append(lines)
            self._batch_size += len(lines) + 1
            if now >= self._send_by:
                self._send_batch()

    def tick(self) -> None:
        if self._batch and time.monotonic() >= self._send_by:
            with self._lock:
                if self._batch:
                    self._send_batch()

    def _send_batch(self) -> None:
        # Under self._lock; the send never blocks.
        data = "\n".join(self._batch).encode()
        self._batch.clear()
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
            if self._batch:
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
