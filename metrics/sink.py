"""The Prometheus sink of the instrumentation layer: each process adds to its slot file.

The sink is built in the master by configure() and inherited by every process the
master forks; each process opens its own slot file on its first report (an at-fork
hook makes a child forget its parent's), so counts are never shared or lost. The
request path is a few indexed adds into shared memory under a lock (the thread
worker's threads share the file); no system call, no formatting, no socket.
Standard library only: prometheus_client is imported by the metrics sidecar alone.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from bisect import bisect_left
from typing import Any

from polycorn.metrics import schema
from polycorn.metrics.schema import index
from polycorn.metrics.slots import SlotFile
from polycorn.server.instrument import Observer

log = logging.getLogger("polycorn.error")

_REQUESTS = index("polycorn_http_requests", method="GET", status="1xx")
_METHOD_BASE = {m: _REQUESTS + i * len(schema.STATUS_CLASSES)
                for i, m in enumerate(schema.METHODS)}
_OTHER_METHOD = _METHOD_BASE["other"]
_STARTED = index("polycorn_http_requests_started")
_BUCKETS = index("polycorn_http_request_duration_seconds", le=str(schema.DURATION_BUCKETS[0]))
_DURATION_SUM = index("polycorn_http_request_duration_seconds_sum")
_BYTES_IN = index("polycorn_http_request_body_bytes")
_BYTES_OUT = index("polycorn_http_response_body_bytes")
_BOUNDS = schema.DURATION_BUCKETS
_EVENTS = {
    "upgrade_started": ("usr2", "started"), "upgrade_promoted": ("usr2", "promoted"),
    "upgrade_rolled_back": ("usr2", "rolled_back"), "reload_promoted": ("hup", "promoted"),
    "reload_failed": ("hup", "rolled_back"),
}

# The process's own slot file, per directory; forgotten in a forked child.
_own: dict[str, SlotFile] = {}
_sinks: weakref.WeakSet[MetricsSink] = weakref.WeakSet()


def _forget_after_fork() -> None:
    _own.clear()
    for sink in list(_sinks):
        sink._values = None
        sink._lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def own_slots(directory: str) -> SlotFile:
    """This process's slot file in directory (created on first use)."""
    slot_file = _own.get(directory)
    if slot_file is None:
        slot_file = _own[directory] = SlotFile(directory)
    return slot_file


class MetricsSink(Observer):
    """threaded: requests are reported from several threads (the thread worker), so the
    request path's adds take a lock; a single-threaded worker's need none (a lock costs
    about as much as two of the adds)."""

    def __init__(self, directory: str, threaded: bool = True) -> None:
        self.directory = directory
        self._values: Any = None  # this process's floats (memoryview), opened on first use
        self._lock = threading.Lock()
        self._failed = False
        if not threaded:
            self.request_started = self._started_alone  # type: ignore[method-assign]
            self.request_finished = self._finished_alone  # type: ignore[method-assign]
        _sinks.add(self)

    def _open(self) -> Any:
        try:
            values = self._values = own_slots(self.directory).values
        except OSError as exc:
            if not self._failed:  # once per process: metrics must not flood the log
                self._failed = True
                log.error("metrics: cannot create a slot file in %s: %s (pid %s); this "
                          "process reports nothing", self.directory, exc, os.getpid())
            values = self._values = _Discard()
        return values

    # -- the request path

    def request_started(self) -> None:
        v = self._values
        if v is None:
            v = self._open()
        with self._lock:
            v[_STARTED] += 1

    def request_finished(self, method: str, status: int, duration: float,
                         bytes_out: int, bytes_in: int = 0) -> None:
        v = self._values
        if v is None:
            v = self._open()
        cls = status // 100
        slot = _METHOD_BASE.get(method, _OTHER_METHOD) + (cls - 1 if 1 <= cls <= 5 else 4)
        bucket = _BUCKETS + bisect_left(_BOUNDS, duration)
        with self._lock:
            v[slot] += 1
            v[bucket] += 1
            v[_DURATION_SUM] += duration
            v[_BYTES_OUT] += bytes_out
            if bytes_in:
                v[_BYTES_IN] += bytes_in

    def _started_alone(self) -> None:
        v = self._values
        if v is None:
            v = self._open()
        v[_STARTED] += 1

    def _finished_alone(self, method: str, status: int, duration: float,
                        bytes_out: int, bytes_in: int = 0) -> None:
        """request_finished without the lock: the one thread that reports (sync, event)."""
        v = self._values
        if v is None:
            v = self._open()
        cls = status // 100
        v[_METHOD_BASE.get(method, _OTHER_METHOD) + (cls - 1 if 1 <= cls <= 5 else 4)] += 1
        v[_BUCKETS + bisect_left(_BOUNDS, duration)] += 1
        v[_DURATION_SUM] += duration
        v[_BYTES_OUT] += bytes_out
        if bytes_in:
            v[_BYTES_IN] += bytes_in

    # -- the master and the agent: rare

    def _add(self, slot: int, amount: float = 1.0) -> None:
        v = self._values
        if v is None:
            v = self._open()
        with self._lock:
            v[slot] += amount

    def _set(self, slot: int, value: float) -> None:
        v = self._values
        if v is None:
            v = self._open()
        v[slot] = value

    def connections(self, count: int) -> None:
        self._set(index("polycorn_http_connections_open"), count)

    def worker_exited(self, reason: str) -> None:
        if reason in schema.EXIT_REASONS:
            self._add(index("polycorn_worker_exits", reason=reason))

    def worker_states(self, counts: dict[str, int]) -> None:
        for state in schema.WORKER_STATES:
            self._set(index("polycorn_workers", state=state), counts.get(state, 0))

    def generation_ready(self, seconds: float) -> None:
        self._set(index("polycorn_generation_boot_seconds"), seconds)

    def event(self, name: str, reason: str = "") -> None:
        if name in _EVENTS:
            signal, outcome = _EVENTS[name]
            why = schema.rollback_reason(reason) if outcome == "rolled_back" else ""
            self._add(index("polycorn_reloads", signal=signal, outcome=outcome, reason=why))
        elif name == "handoff_owner_changed":
            self._add(index("polycorn_handoff_owner_changes"))
        elif name == "master_restarted":
            self._add(index("polycorn_master_restarts"))
        elif name in ("node_dead", "leader_changed"):
            self._add(index("polycorn_cluster_events", event=name))

    def cluster_state(self, facts: dict[str, Any]) -> None:
        state = facts.get("state", "")
        known = state if state in schema.NODE_STATES else "other"
        for name in schema.NODE_STATES:
            self._set(index("polycorn_cluster_node_state", state=name),
                      1.0 if name == known and state else 0.0)
        self._set(index("polycorn_cluster_leader"), 1.0 if facts.get("leader") else 0.0)
        self._set(index("polycorn_cluster_epoch"), float(facts.get("epoch") or 0))
        heartbeat = float(facts.get("heartbeat") or 0.0)
        if heartbeat:
            self._set(index("polycorn_cluster_last_heartbeat_timestamp_seconds"), heartbeat)

    def cluster_count(self, name: str) -> None:
        if name == "redis_error":
            self._add(index("polycorn_cluster_redis_errors"))
        elif name in ("command_applied", "command_rejected"):
            self._add(index("polycorn_cluster_fenced_commands",
                            outcome=name.removeprefix("command_")))

    def close(self) -> None:
        """Nothing to release: the slot file lives as long as its process (a HUP's new
        sink reports into the same file, so its gauges stay)."""


class _Discard:
    """Stands for the floats when no slot file could be made: reports go nowhere."""

    def __getitem__(self, i: int) -> float:
        return 0.0

    def __setitem__(self, i: int, value: float) -> None:
        pass
