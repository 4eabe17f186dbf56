"""An in-memory ClusterStore with a settable clock, for tests of the decision logic.

Same semantics as RedisStore, method for method (tests/ha/test_store_contract.py
runs one suite against both). Keys expire by the injected millisecond clock;
`available = False` makes every call raise StoreUnavailable, like Redis being down.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from polycorn.ha import events as ev
from polycorn.ha.commands import NodeCommand
from polycorn.ha.events import Event
from polycorn.ha.registry import NodeInfo, NodeRecord, NodeState, record_from_hash
from polycorn.ha.snapshot import ClusterSnapshot, Lease, Member
from polycorn.ha.store import ClusterStore, Heartbeat, StoreUnavailable


def _wall_ms() -> int:
    return int(time.time() * 1000)


class MemoryStore(ClusterStore):
    def __init__(self, clock: Callable[[], int] = _wall_ms) -> None:
        self.clock = clock
        self.available = True
        self._lease: tuple[Lease, int] | None = None  # lease, expiry ms
        self._epoch = 0
        self._members: dict[str, int] = {}
        self._incarnations: dict[str, int] = {}
        self._nodes: dict[str, tuple[dict[str, str], int]] = {}  # hash, expiry ms
        self._commands: dict[tuple[str, int], list[str]] = {}
        self._events: list[Event] = []
        self._seq = itertools.count()

    # -- helpers ----------------------------------------------------------------------

    def _now(self) -> int:
        if not self.available:
            raise StoreUnavailable("memory store marked unavailable")
        return self.clock()

    def _current_lease(self, now: int) -> Lease | None:
        if self._lease and self._lease[1] > now:
            return self._lease[0]
        self._lease = None
        return None

    def _node(self, node_id: str, now: int) -> dict[str, str]:
        entry = self._nodes.get(node_id)
        if entry and entry[1] > now:
            return entry[0]
        self._nodes.pop(node_id, None)
        return {}

    def _log(self, now: int, kind: str, node: str, epoch: int, reason: str, **extra: str) -> None:
        eid = f"{now}-{next(self._seq)}"
        self._events.append(Event(kind, node, epoch, reason, dict(extra), eid, now))
        del self._events[:-ev.STREAM_MAXLEN]

    # -- reads ------------------------------------------------------------------------

    def snapshot(self) -> ClusterSnapshot:
        now = self._now()
        members = tuple(Member(n, s) for n, s in sorted(self._members.items(), key=lambda x: x[1]))
        return ClusterSnapshot(now, self._current_lease(now), self._epoch, members)

    def nodes(self, ttl_ms: int) -> tuple[ClusterSnapshot, list[NodeRecord]]:
        snap = self.snapshot()
        return snap, [record_from_hash(m.node_id, self._node(m.node_id, snap.now_ms),
                                       m.heartbeat_ms, snap.now_ms, ttl_ms)
                      for m in snap.members]

    def read_events(self, after: str = "0", count: int = 100,
                    block_ms: int | None = None) -> list[Event]:
        self._now()
        key = _id_key(after)
        return [e for e in self._events if _id_key(e.id) > key][:count]

    # -- lease ------------------------------------------------------------------------

    def acquire_lease(self, node_id: str, lease_ms: int, reason: str,
                      seen_epoch: int = 0) -> int | None:
        now = self._now()
        if self._current_lease(now) is not None:
            return None
        self._epoch = max(self._epoch, seen_epoch) + 1
        self._lease = (Lease(node_id, self._epoch), now + lease_ms)
        self._log(now, ev.LEADER_ELECTED, node_id, self._epoch, reason)
        return self._epoch

    def renew_lease(self, lease: Lease, lease_ms: int) -> bool:
        now = self._now()
        if self._current_lease(now) != lease:
            return False
        self._lease = (lease, now + lease_ms)
        return True

    def resign_lease(self, lease: Lease, reason: str) -> bool:
        now = self._now()
        if self._current_lease(now) != lease:
            return False
        self._lease = None
        self._log(now, ev.LEADER_RESIGNED, lease.holder, lease.epoch, reason)
        return True

    # -- registry ---------------------------------------------------------------------

    def register(self, info: NodeInfo, ttl_ms: int) -> int:
        now = self._now()
        incarnation = self._incarnations.get(info.node_id, 0) + 1
        self._incarnations[info.node_id] = incarnation
        self._write_node(info, incarnation, now, ttl_ms)
        self._log(now, ev.NODE_JOINED, info.node_id, 0, "registered",
                  incarnation=str(incarnation))
        return incarnation

    def _write_node(self, info: NodeInfo, incarnation: int, now: int, ttl_ms: int) -> None:
        data = {**info.to_hash(), "incarnation": str(incarnation), "heartbeat": str(now)}
        self._nodes[info.node_id] = (data, now + ttl_ms)
        self._members[info.node_id] = now

    def heartbeat(self, info: NodeInfo, incarnation: int, ttl_ms: int) -> Heartbeat:
        now = self._now()
        if self._incarnations.get(info.node_id, 0) > incarnation:
            return Heartbeat.SUPERSEDED
        self._incarnations[info.node_id] = incarnation  # restores a lost counter
        old = self._node(info.node_id, now)
        self._write_node(info, incarnation, now, ttl_ms)
        if not old:
            self._log(now, ev.NODE_JOINED, info.node_id, 0, "heartbeat resumed",
                      incarnation=str(incarnation))
            return Heartbeat.REJOINED
        if old.get("state") != info.state.value and info.state is not NodeState.BOOTING:
            self._log(now, f"node_{info.state.value}", info.node_id, 0, "state changed",
                      incarnation=str(incarnation))
        return Heartbeat.REFRESHED

    def deregister(self, node_id: str, incarnation: int, kind: str, reason: str) -> bool:
        now = self._now()
        if self._incarnations.get(node_id) != incarnation:
            return False
        self._nodes.pop(node_id, None)
        self._members.pop(node_id, None)
        self._commands.pop((node_id, incarnation), None)
        self._log(now, kind, node_id, 0, reason, incarnation=str(incarnation))
        return True

    # -- fenced leader actions --------------------------------------------------------

    def declare_dead(self, lease: Lease, node_id: str, ttl_ms: int, reason: str) -> bool:
        now = self._now()
        if self._current_lease(now) != lease:
            return False
        score = self._members.get(node_id)
        if score is None or now - score < ttl_ms or self._node(node_id, now):
            return False
        del self._members[node_id]
        self._log(now, ev.NODE_DEAD, node_id, lease.epoch, reason, by=lease.holder)
        return True

    def send_command(self, lease: Lease, command: NodeCommand) -> bool:
        now = self._now()
        if self._current_lease(now) != lease or command.epoch != lease.epoch:
            return False
        queue = self._commands.setdefault((command.node_id, command.incarnation), [])
        queue.append(command.encode())
        return True

    # -- inbox and events -------------------------------------------------------------

    def take_commands(self, node_id: str, incarnation: int, limit: int = 16) -> list[str]:
        self._now()
        queue = self._commands.get((node_id, incarnation), [])
        taken, queue[:] = queue[:limit], queue[limit:]
        return taken

    def latest_events(self, count: int) -> list[Event]:
        self._now()
        return self._events[-count:] if count > 0 else []

    def forget_everything(self) -> None:
        """Lose every key, as a Redis restarted without persistence does (tests)."""
        self._lease, self._epoch = None, 0
        for table in (self._members, self._incarnations, self._nodes, self._commands):
            table.clear()
        self._events.clear()

    def push_raw_command(self, node_id: str, incarnation: int, wire: str) -> None:
        """Queue a command without the leader's check (tests: a deposed leader's send)."""
        self._commands.setdefault((node_id, incarnation), []).append(wire)

    def emit(self, event: Event) -> None:
        self._log(self._now(), event.kind, event.node, event.epoch, event.reason, **event.extra)

    def close(self) -> None:
        """Nothing to release: the state lives in this object."""


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms or 0), int(seq or 0)
