"""The history a chaos run's checker reads: what each process itself did, as it did it.

Each process that opts in (POLYCORN_HISTORY=DIR in its environment) appends JSON
lines to its own file in DIR, every line stamped with CLOCK_MONOTONIC (one clock
for every process on the host, namespaces included), so the checker can order
what different processes saw without trusting Redis' copy of it: a history is
never rebuilt from Redis. Off (the default), recording costs one attribute test.
The store seam (RecordingStore) logs every write the agent makes with its start,
end and outcome; a call that failed is "unavailable", its effect unknown.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

ENV = "POLYCORN_HISTORY"


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class History:
    """Appends one JSON line per record to this process's own file (nothing when off)."""

    def __init__(self, path: str | None = None, who: str = "") -> None:
        self.who = who
        self.path = path
        self._fd: int | None = None
        if path:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    @property
    def enabled(self) -> bool:
        return self._fd is not None

    def record(self, kind: str, t: float | None = None, **fields: Any) -> None:
        if self._fd is None:
            return
        line = {"t": now() if t is None else t, "k": kind, "who": self.who,
                "pid": os.getpid(), **fields}
        try:  # one write per line, O_APPEND: lines never interleave
            os.write(self._fd, (json.dumps(line, default=str, separators=(",", ":"))
                                + "\n").encode())
        except OSError:
            pass  # a full disk must never stop a node; the checker sees the gap

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_current = History()


def current() -> History:
    return _current


def open_from_env(who: str, environ: dict[str, str] | None = None) -> History:
    """Start this process's history if POLYCORN_HISTORY names a directory."""
    global _current
    directory = (os.environ if environ is None else environ).get(ENV)
    if directory:
        safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in who) or "proc"
        _current = History(os.path.join(directory, f"{safe}-{os.getpid()}.jsonl"), who)
    return _current


def _lease(lease: Any) -> dict[str, Any]:
    return {"holder": lease.holder, "epoch": lease.epoch}


def _command(command: Any) -> dict[str, Any] | None:
    if command is None:
        return None
    return {"id": command.id, "node": command.node_id, "incarnation": command.incarnation,
            "epoch": command.epoch, "cmd": command.cmd, "n": command.n, "by": command.issued_by}


# What each store write records of its arguments (the store's own method signatures).
_WRITES: dict[str, Callable[..., dict[str, Any]]] = {
    "register": lambda info, ttl_ms: {"node": info.node_id, "state": info.state.value},
    "heartbeat": lambda info, incarnation, ttl_ms: {
        "node": info.node_id, "incarnation": incarnation, "state": info.state.value,
        "workers": info.workers, "workers_target": info.workers_target},
    "deregister": lambda node_id, incarnation, kind, reason, departure=None: {
        "node": node_id, "incarnation": incarnation, "why": kind},
    "acquire_lease": lambda node_id, lease_ms, reason, seen_epoch=0: {
        "node": node_id, "seen_epoch": seen_epoch},
    "renew_lease": lambda lease, lease_ms: _lease(lease),
    "resign_lease": lambda lease, reason: _lease(lease),
    "declare_dead": lambda lease, node_id, ttl_ms, reason: {
        **_lease(lease), "node": node_id, "ttl_ms": ttl_ms, "reason": reason},
    "grant_workers": lambda lease, node_id, grant, command, event_kind, reason: {
        **_lease(lease), "node": node_id, "command": _command(command)},
    "issue_upgrade": lambda lease, rollout_id, entry, command, reason: {
        **_lease(lease), "node": entry.node_id, "rollout": rollout_id,
        "command": _command(command)},
    "finish_upgrade": lambda lease, rollout_id, entry, reason: {
        **_lease(lease), "node": entry.node_id, "rollout": rollout_id, "step": entry.step.value},
    "send_command": lambda lease, command: {**_lease(lease), "command": _command(command)},
    "emit": lambda event: {"event": event.kind, "node": event.node, "epoch": event.epoch},
}


def _result(value: Any) -> Any:
    value = getattr(value, "value", value)  # enums
    if isinstance(value, tuple):
        return list(value)
    return value


class RecordingStore:
    """A ClusterStore that records each write (args, start, end, result) in the history.

    Reads pass through, except that cluster_state notes Redis' run id and the running
    rollout's max_unavailable: each write is stamped with the Redis primary lineage
    (run id) it was last seen on, which is what --max-unavailable is judged per.
    """

    def __init__(self, store: Any, history: History) -> None:
        self._store = store
        self._history = history
        self._lineage = ""
        self._max_unavailable: int | None = None

    def cluster_state(self, ttl_ms: int) -> Any:
        view = self._store.cluster_state(ttl_ms)
        self._lineage = str(view.server_id or "")
        rollout = getattr(view, "rollout", None)
        self._max_unavailable = getattr(rollout, "max_unavailable", None)
        return view

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        describe = _WRITES.get(name)
        if describe is None:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            fields = describe(*args, **kwargs)
            if name == "issue_upgrade":
                fields["max_unavailable"] = self._max_unavailable
            t0 = now()
            try:
                result = attr(*args, **kwargs)
            except Exception as exc:
                self._history.record("store", t=t0, t1=now(), op=name, res="unavailable",
                                     error=type(exc).__name__, lineage=self._lineage, **fields)
                raise
            self._history.record("store", t=t0, t1=now(), op=name, res=_result(result),
                                 lineage=self._lineage, **fields)
            return result
        return call
