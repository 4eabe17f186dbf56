"""An in-memory ClusterStore with a settable clock, for tests of the decision logic.

Same semantics as RedisStore, method for method (tests/ha/test_store_contract.py
runs one suite against both). Keys expire by the injected millisecond clock;
`available = False` makes every call raise StoreUnavailable, like Redis being down.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import replace

from polycorn.ha import events as ev
from polycorn.ha.cluster_state import ClusterState, DeadNode, Grant
from polycorn.ha.commands import NodeCommand
from polycorn.ha.events import Event
from polycorn.ha.registry import Departure, NodeInfo, NodeRecord, NodeState, record_from_hash
from polycorn.ha.rollout import NodeRollout, RolloutRecord, RolloutState, Step
from polycorn.ha.snapshot import ElectionSnapshot, Lease, Member
from polycorn.ha.store import ClusterStore, FinishResult, Heartbeat, IssueResult, StoreUnavailable


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
        self._roster: dict[str, int] = {}
        self._dead: dict[str, DeadNode] = {}
        self._lost: dict[str, str] = {}
        self._grants: dict[str, Grant] = {}
        self._drained: set[str] = set()
        self._rollout: RolloutRecord | None = None
        self.server_id = "memory-1"  # change it to stand for a Redis failover or restart

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

    def snapshot(self, members: bool = True) -> ElectionSnapshot:
        now = self._now()
        listed = tuple(Member(n, s) for n, s in sorted(self._members.items(), key=lambda x: x[1])
                       ) if members else ()
        return ElectionSnapshot(now, self._current_lease(now), self._epoch, listed,
                                self.server_id)

    def nodes(self, ttl_ms: int) -> tuple[ElectionSnapshot, list[NodeRecord]]:
        snap = self.snapshot()
        return snap, [record_from_hash(m.node_id, self._node(m.node_id, snap.now_ms),
                                       m.heartbeat_ms, snap.now_ms, ttl_ms)
                      for m in snap.members]

    def cluster_state(self, ttl_ms: int) -> ClusterState:
        snap, records = self.nodes(ttl_ms)
        return ClusterState(snap, tuple(records), dict(self._roster), dict(self._dead),
                           dict(self._lost), dict(self._grants), frozenset(self._drained),
                           self._rollout, self.server_id)

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
        self._lost.pop(info.node_id, None)
        if self._dead.pop(info.node_id, None) is not None:
            self._log(now, ev.NODE_REJOINED, info.node_id, 0, "back after being declared dead",
                      incarnation=str(incarnation))
        else:
            self._log(now, ev.NODE_JOINED, info.node_id, 0, "registered",
                      incarnation=str(incarnation))
        return incarnation

    def _write_node(self, info: NodeInfo, incarnation: int, now: int, ttl_ms: int) -> None:
        data = {**info.to_hash(), "incarnation": str(incarnation), "heartbeat": str(now)}
        self._nodes[info.node_id] = (data, now + ttl_ms)
        self._members[info.node_id] = now
        if info.state is NodeState.READY and info.workers_configured > 0:
            self._roster[info.node_id] = info.workers_configured  # it served: owed if it dies

    def heartbeat(self, info: NodeInfo, incarnation: int, ttl_ms: int) -> Heartbeat:
        now = self._now()
        if self._incarnations.get(info.node_id, 0) > incarnation:
            return Heartbeat.SUPERSEDED
        if info.node_id in self._dead:
            return Heartbeat.DECLARED_DEAD
        self._incarnations[info.node_id] = incarnation  # restores a lost counter
        old = self._node(info.node_id, now)
        self._write_node(info, incarnation, now, ttl_ms)
        if not old:
            self._log(now, ev.NODE_JOINED, info.node_id, 0, "heartbeat resumed",
                      incarnation=str(incarnation))
            return Heartbeat.REJOINED
        kind = ev.STATE_EVENTS.get(info.state.value)  # none for booting
        if old.get("state") != info.state.value and kind:
            self._log(now, kind, info.node_id, 0, "state changed", incarnation=str(incarnation))
        return Heartbeat.REFRESHED

    def deregister(self, node_id: str, incarnation: int, kind: str, reason: str,
                   departure: Departure = Departure.LEFT) -> bool:
        now = self._now()
        if self._incarnations.get(node_id) != incarnation:
            return False
        self._nodes.pop(node_id, None)
        self._members.pop(node_id, None)
        self._commands.pop((node_id, incarnation), None)
        if departure is Departure.LEFT:
            self._roster.pop(node_id, None)
            self._grants.pop(node_id, None)
        elif departure is Departure.LOST:
            self._lost[node_id] = reason
        self._log(now, kind, node_id, 0, reason, incarnation=str(incarnation),
                  departure=departure.value)
        return True

    # -- fenced leader actions --------------------------------------------------------

    def declare_dead(self, lease: Lease, node_id: str, ttl_ms: int, reason: str) -> bool:
        now = self._now()
        if self._current_lease(now) != lease or self._node(node_id, now):
            return False
        if node_id not in self._lost:
            score = self._members.get(node_id)
            if score is None or now - score < ttl_ms:
                return False
        self._members.pop(node_id, None)
        self._lost.pop(node_id, None)
        self._grants.pop(node_id, None)
        self._dead[node_id] = DeadNode(node_id, now, reason, lease.epoch, lease.holder)
        self._log(now, ev.NODE_DEAD, node_id, lease.epoch, reason, by=lease.holder)
        return True

    def grant_workers(self, lease: Lease, node_id: str, grant: Grant | None,
                      command: NodeCommand | None, event_kind: str, reason: str) -> bool:
        now = self._now()
        if self._current_lease(now) != lease:
            return False
        if grant is None:
            self._grants.pop(node_id, None)
        else:
            self._grants[node_id] = grant
        if command is not None:
            self._commands.setdefault((node_id, command.incarnation), []).append(
                command.encode())
        if event_kind:
            workers = "" if command is None or command.n is None else str(command.n)
            self._log(now, event_kind, node_id, lease.epoch, reason, by=lease.holder,
                      workers=workers)
        return True

    def _running(self, rollout_id: str) -> RolloutRecord | None:
        r = self._rollout
        return r if r and r.id == rollout_id and r.state is RolloutState.RUNNING else None

    def issue_upgrade(self, lease: Lease, rollout_id: str, entry: NodeRollout,
                      command: NodeCommand, reason: str) -> IssueResult:
        now = self._now()
        if self._current_lease(now) != lease:
            return IssueResult.NOT_LEADER
        rollout = self._running(rollout_id)
        if rollout is None:
            return IssueResult.NOT_RUNNING
        old = rollout.nodes.get(entry.node_id)
        if old is not None and old.step is Step.PENDING:
            if len(rollout.slots) >= rollout.max_unavailable:
                return IssueResult.NO_SLOT
            outcome, kind = IssueResult.ISSUED, ev.ROLLOUT_NODE_STARTED
        elif old is not None and old.step is Step.UPGRADING and old.epoch < lease.epoch:
            outcome, kind = IssueResult.REISSUED, ev.ROLLOUT_NODE_REISSUED
        else:
            return IssueResult.NOT_PENDING
        self._rollout = replace(rollout, nodes={**rollout.nodes, entry.node_id: entry},
                                slots=rollout.slots | {entry.node_id})
        self._commands.setdefault((command.node_id, command.incarnation), []).append(
            command.encode())
        self._log(now, kind, entry.node_id, lease.epoch, reason, by=lease.holder,
                  rollout=rollout_id)
        return outcome

    def finish_upgrade(self, lease: Lease, rollout_id: str, entry: NodeRollout,
                       reason: str) -> FinishResult:
        now = self._now()
        if self._current_lease(now) != lease:
            return FinishResult.NOT_LEADER
        rollout = self._running(rollout_id)
        if rollout is None:
            return FinishResult.NOT_RUNNING
        old = rollout.nodes.get(entry.node_id)
        failed = entry.step is Step.FAILED
        if old is None or not (old.step is Step.UPGRADING
                               or (old.step is Step.PENDING and failed)):
            return FinishResult.NOT_UPGRADING
        nodes = {**rollout.nodes, entry.node_id: entry}
        slots = rollout.slots - {entry.node_id}
        tag = dict(by=lease.holder, rollout=rollout_id)
        if failed:
            self._rollout = replace(rollout, nodes=nodes, slots=slots,
                                    state=RolloutState.FAILED, failed_node=entry.node_id,
                                    reason=reason, finished_ms=now)
            self._log(now, ev.ROLLOUT_NODE_FAILED, entry.node_id, lease.epoch, reason, **tag)
            self._log(now, ev.ROLLOUT_FAILED, entry.node_id, lease.epoch, reason, **tag)
            return FinishResult.FAILED
        self._log(now, ev.ROLLOUT_NODE_DONE, entry.node_id, lease.epoch, reason, **tag)
        if all(e.step is Step.DONE for e in nodes.values()):
            self._rollout = replace(rollout, nodes=nodes, slots=slots,
                                    state=RolloutState.DONE, finished_ms=now)
            self._log(now, ev.ROLLOUT_DONE, "", lease.epoch, "every node upgraded", **tag)
            return FinishResult.DONE
        self._rollout = replace(rollout, nodes=nodes, slots=slots)
        return FinishResult.RUNNING

    # -- operator requests ------------------------------------------------------------

    def create_rollout(self, rollout: RolloutRecord, reason: str) -> tuple[bool, str]:
        now = self._now()
        if self._rollout is not None and self._rollout.state is RolloutState.RUNNING:
            return False, self._rollout.id
        self._rollout = replace(rollout, created_ms=now, slots=frozenset())
        self._log(now, ev.ROLLOUT_STARTED, "", 0, reason, rollout=rollout.id)
        return True, rollout.id

    def abort_rollout(self, reason: str) -> str | None:
        now = self._now()
        rollout = self._rollout
        if rollout is None or rollout.state is not RolloutState.RUNNING:
            return None
        self._rollout = replace(rollout, state=RolloutState.ABORTED, reason=reason,
                                finished_ms=now, slots=frozenset())
        self._log(now, ev.ROLLOUT_ABORTED, "", 0, reason, rollout=rollout.id)
        return rollout.id

    def set_drained(self, node_id: str, drained: bool, reason: str) -> bool:
        now = self._now()
        changed = (node_id in self._drained) != drained
        if drained:
            self._drained.add(node_id)
        else:
            self._drained.discard(node_id)
        self._log(now, ev.DRAIN_REQUESTED if drained else ev.UNDRAIN_REQUESTED, node_id, 0,
                  reason)
        return changed

    def forget_node(self, node_id: str, reason: str) -> bool:
        now = self._now()
        removed = [t.pop(node_id, None) is not None
                   for t in (self._roster, self._dead, self._lost, self._grants)]
        known = node_id in self._drained or any(removed)
        self._drained.discard(node_id)
        self._log(now, ev.NODE_FORGOTTEN, node_id, 0, reason)
        return known

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
        for table in (self._members, self._incarnations, self._nodes, self._commands,
                      self._roster, self._dead, self._lost, self._grants):
            table.clear()
        self._drained.clear()
        self._rollout = None
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
