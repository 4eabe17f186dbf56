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
RELOAD_PROMOTED = "reload_promoted"  # instruments only: no cluster event for a HUP that worked
MASTER_RESTARTED = "master_restarted"
NODE_DEAD = "node_dead"
LEADER_CHANGED = "leader_changed"
HANDOFF_OWNER_CHANGED = "handoff_owner_changed"

# Why a worker left (Observer.worker_exited): a small fixed set, so a sink may use it
# as a label. "retired" is the master's own asking (TTOU, HUP, stop, upgrade).
WORKER_EXIT_REASONS = ("max_requests", "exited", "timeout", "killed", "crashed",
                       "boot_failed", "retired")

# Log levels counted, Gunicorn's names: an ERROR record with a traceback attached is an
# "exception" (its Logger.exception()), not also an "error".
LOG_LEVELS = ("critical", "error", "warning", "exception")

log = logging.getLogger("polycorn.error")


class Observer:
    """A sink of the instrumentation layer. Methods must be cheap and must not block."""

    def request_finished(self, method: str, status: int, duration: float,
                         bytes_out: int, bytes_in: int = 0) -> None:
        """One request answered: its method, status code, seconds from the start of
        the request cycle to the end of the response, body bytes sent and read."""

    def request_started(self) -> None:
        """A request's head was read and its cycle begins (requests in flight)."""

    def connections(self, count: int) -> None:
        """The client connections a worker holds, at its heartbeat."""

    def worker_exited(self, reason: str) -> None:
        """The master reaped a worker; reason is one of WORKER_EXIT_REASONS."""

    def worker_states(self, counts: dict[str, int]) -> None:
        """The master's workers by state (booting, ready, stopping), on change."""

    def generation_ready(self, seconds: float) -> None:
        """This master's generation became ready, `seconds` after the master started."""

    def cluster_state(self, facts: dict[str, Any]) -> None:
        """The cluster agent's view of its node, each cycle: state (str), leader
        (bool), epoch (int), heartbeat (wall-clock time of the last one that Redis
        answered, 0 for none)."""

    def cluster_count(self, name: str) -> None:
        """One cluster occurrence: redis_error, command_applied, command_rejected."""

    def workers(self, count: int) -> None:
        """The master's worker count, on change."""

    def backlog(self, queued: int) -> None:
        """Connections waiting in the listeners' accept queues."""

    def log_record(self, level: str) -> None:
        """One error-log record at a level of LOG_LEVELS."""

    def event(self, name: str, reason: str = "") -> None:
        """A lifecycle event (the names above) and why."""

    def tick(self) -> None:
        """Called at least once a second by every worker's heartbeat."""

    def close(self) -> None:
        """Send what is buffered and release sockets or files; the sink is not called again."""


class Instruments(Observer):
    """Every configured sink behind one Observer; `active` is False when there is none,
    so a caller on a hot path can skip even building its arguments."""

    def __init__(self, sinks: Iterable[Observer] = ()) -> None:
        self.sinks: tuple[Observer, ...] = tuple(sinks)
        self.active = bool(self.sinks)

    def request_finished(self, method: str, status: int, duration: float,
                         bytes_out: int, bytes_in: int = 0) -> None:
        for sink in self.sinks:
            try:
                sink.request_finished(method, status, duration, bytes_out, bytes_in)
            except Exception:
                _sink_failed(sink, "request_finished")

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

    def request_started(self) -> None:
        for sink in self.sinks:
            try:
                sink.request_started()
            except Exception:
                _sink_failed(sink, "request_started")

    def connections(self, count: int) -> None:
        self._each("connections", count)

    def worker_exited(self, reason: str) -> None:
        self._each("worker_exited", reason)

    def worker_states(self, counts: dict[str, int]) -> None:
        self._each("worker_states", counts)

    def generation_ready(self, seconds: float) -> None:
        self._each("generation_ready", seconds)

    def cluster_state(self, facts: dict[str, Any]) -> None:
        self._each("cluster_state", facts)

    def cluster_count(self, name: str) -> None:
        self._each("cluster_count", name)

    def tick(self) -> None:
        self._each("tick")

    def close(self) -> None:
        self._each("close")
        self.sinks = ()
        self.active = False

    def _each(self, call: str, *args: Any) -> None:
        """Every sink's `call`; one sink's failure neither stops the others nor the caller.
        (The request path's calls are spelled out: they run on every request.)"""
        for sink in self.sinks:
            try:
                getattr(sink, call)(*args)
            except Exception:
                _sink_failed(sink, call)


def _sink_failed(sink: Observer, call: str) -> None:
    # A sink's bug, not a network error (sinks swallow those): worth a traceback.
    log.exception("instrument sink %s failed in %s", type(sink).__name__, call)
