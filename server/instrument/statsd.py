"""The statsd sink: Gunicorn's metric names and types, so its dashboards keep working.

Names are <prefix>gunicorn.<name> as Gunicorn's statsd logger sends them:
request.duration (timer, ms), requests and request.status.<code> (counters),
workers (gauge), backlog (histogram), log.<level> (counters); Polycorn's events
are <prefix>polycorn.<event> counters. Counters carry Gunicorn's "|@1.0" sample
rate and, with --dogstatsd-tags, every line ends with "|#<tags>". The three
metrics of one request go in one datagram, newline-separated (the multi-metric
packet statsd, Telegraf, the Datadog agent and statsd_exporter all read): one
send per request rather than three.
"""

from __future__ import annotations

from typing import Any

from polycorn.server.instrument.datagram import DatagramSender
from polycorn.server.instrument.observer import Observer


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

    def request_finished(self, method: str, status: int, duration: float,
                         bytes_out: int) -> None:
        self.sender.send(f"{self._request_head}{duration * 1000:.3f}{self._request_middle}"
                         f"{status}{self._request_tail}".encode())

    def workers(self, count: int) -> None:
        self.sender.send(f"{self._gunicorn}workers:{count}|g{self._tags}".encode())

    def backlog(self, queued: int) -> None:
        self.sender.send(f"{self._gunicorn}backlog:{queued}|h{self._tags}".encode())

    def log_record(self, level: str) -> None:
        self.sender.send(f"{self._gunicorn}log.{level}:1|c|@1.0{self._tags}".encode())

    def event(self, name: str, reason: str = "") -> None:
        self.sender.send(f"{self._polycorn}{name}:1|c|@1.0{self._tags}".encode())

    def close(self) -> None:
        self.sender.close()


def statsd_sink(cfg: Any) -> StatsdSink | None:
    """The sink --statsd-host asks for, or None when it is unset."""
    address = getattr(cfg, "statsd_host", None)
    if address is None:
        return None
    return StatsdSink(DatagramSender(address),
                      getattr(cfg, "statsd_prefix", "") or "",
                      getattr(cfg, "dogstatsd_tags", "") or "")
