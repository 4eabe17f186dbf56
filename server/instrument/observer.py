"""What the server reports (Observer) and the fan-out to every configured sink (Instruments).

Observer's methods are the whole vocabulary of the layer; each is a no-op here, so
a sink overrides only what it measures. Instruments calls every sink and never
lets one sink's failure reach the server: a metric must not fail a request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

# Lifecycle events, named as the cluster events are (ha/events.py); a sink may add
# its own prefix (statsd sends <prefix>polycorn.<name>).
UPGRADE_STARTED = "upgrade_started"
UPGRADE_PROMOTED = "upgrade_promoted"
UPGRADE_ROLLED_BACK = "upgrade_rolled_back"
RELOAD_FAILED = "reload_failed"
MASTER_RESTARTED = "master_restarted"
NODE_DEAD = "node_dead"
LEADER_CHANGED = "leader_changed"

# Log levels counted, Gunicorn's names: an ERROR record with a traceback attached is an
# "exception" (its Logger.exception()), not also an "error".
LOG_LEVELS = ("critical", "error", "warning", "exception")

log = logging.getLogger("polycorn.error")


class Observer:
    """A sink of the instrumentation layer. Methods must be cheap and must not block."""

    def request_finished(self, method: str, status: int, duration: float,
                         bytes_out: int) -> None:
        """One request answered: its method, status code, seconds from the start of
        the request cycle to the end of the response, and body bytes sent."""

    def workers(self, count: int) -> None:
        self._each("workers", count)

    def backlog(self, queued: int) -> None:
        self._each("backlog", queued)

    def log_record(self, level: str) -> None:
        for sink in self.sinks:
            try:
                sink.log_record(level)
            except Exception:
                pass  # no log line here: it would be counted, and could fail again

    def event(self, name: str, reason: str = "") -> None:
        self._each("event", name, reason)

    def tick(self) -> None:
        self._each("tick")

    def _each(self, call: str, *args: Any) -> None:
        """Every sink's `call`; one sink's failure neither stops the others nor the caller.
        (request_finished is spelled out: it runs on every request.)"""
        for sink in self.sinks:
            try:
                getattr(sink, call)(*args)
            except Exception:
                _sink_failed(sink, call)

    def close(self) -> None:
        """Send what is buffered and release sockets or files; the sink is not called again."""


class Instruments(Observer):
    """Every configured sink behind one Observer; `active` is False when there is none,
    so a caller on a hot path can skip even building its arguments."""

    def __init__(self, sinks: Iterable[Observer] = ()) -> None:
        self.sinks: tuple[Observer, ...] = tuple(sinks)
        self.active = bool(self.sinks)

    def request_finished(self, method: str, status: int, duration: float,
                         bytes_out: int) -> None:
        for sink in self.sinks:
            try:
                sink.request_finished(method, status, duration, bytes_out)
            except Exception:
                _sink_failed(sink, "request_finished")

    def workers(self, count: int) -> None:
        for sink in self.sinks:
            try:
                sink.workers(count)
            except Exception:
                _sink_failed(sink, "workers")

    def backlog(self, queued: int) -> None:
        for sink in self.sinks:
            try:
                sink.backlog(queued)
            except Exception:
                _sink_failed(sink, "backlog")

    def log_record(self, level: str) -> None:
        for sink in self.sinks:
            try:
                sink.log_record(level)
            except Exception:
                pass  # no log line here: it would be counted, and could fail again

    def event(self, name: str, reason: str = "") -> None:
        for sink in self.sinks:
            try:
                sink.event(name, reason)
            except Exception:
                _sink_failed(sink, "event")

    def tick(self) -> None:
        for sink in self.sinks:
            try:
                sink.tick()
            except Exception:
                _sink_failed(sink, "tick")

    def close(self) -> None:
        self._each("close")
        self.sinks = ()
        self.active = False


def _sink_failed(sink: Observer, call: str) -> None:
    # A sink's bug, not a network error (sinks swallow those): worth a traceback.
    log.exception("instrument sink %s failed in %s", type(sink).__name__, call)
