"""A cluster rolling upgrade as data, and the pure rules that move it forward.

The rollout lives in Redis (a hash, one JSON entry per node, and a set of the
nodes holding an upgrade slot), so a new leader resumes exactly where the last
one stopped. Each node goes pending -> upgrading -> done | failed; the first
failure halts the rollout. Here are only values and judgements: rollout_duty.py
performs them through the store's Lua scripts, which enforce the slot bound.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from polycorn.ha import events as ev
from polycorn.ha.events import Event
from polycorn.ha.registry import NodeRecord, NodeState

DEFAULT_NODE_TIMEOUT = 120.0  # seconds for one node: above the master's 60 s upgrade timeout


class RolloutState(Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # halted at a failed node
    ABORTED = "aborted"  # stopped by the operator


class Step(Enum):
    PENDING = "pending"
    UPGRADING = "upgrading"  # holds a slot: the upgrade command was issued
    DONE = "done"  # a new master is ready on the node
    FAILED = "failed"


@dataclass(frozen=True)
class NodeRollout:
    """One node's part of a rollout (stored as JSON in the rollout's node hash)."""

    node_id: str
    step: Step = Step.PENDING
    old_release: str = ""
    old_incarnation: int = 0
    old_pid: int = 0
    new_release: str = ""
    new_incarnation: int = 0
    new_pid: int = 0
    started_ms: int = 0  # Redis server time the upgrade was issued
    finished_ms: int = 0
    epoch: int = 0  # epoch of the leader that issued (or last re-issued) the command
    command_id: str = ""
    reason: str = ""

    def encode(self) -> str:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["step"] = self.step.value
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def decode(cls, node_id: str, text: str) -> NodeRollout:
        d = json.loads(text)
        return cls(node_id=node_id, step=Step(d.get("step", "pending")),
                   old_release=str(d.get("old_release") or ""),
                   old_incarnation=int(d.get("old_incarnation") or 0),
                   old_pid=int(d.get("old_pid") or 0),
                   new_release=str(d.get("new_release") or ""),
                   new_incarnation=int(d.get("new_incarnation") or 0),
                   new_pid=int(d.get("new_pid") or 0),
                   started_ms=int(d.get("started_ms") or 0),
                   finished_ms=int(d.get("finished_ms") or 0), epoch=int(d.get("epoch") or 0),
                   command_id=str(d.get("command_id") or ""), reason=str(d.get("reason") or ""))

    def evolve(self, **changes) -> NodeRollout:
        return replace(self, **changes)

    def took(self) -> float:
        return max(0, self.finished_ms - self.started_ms) / 1000 if self.finished_ms else 0.0


@dataclass(frozen=True)
class RolloutRecord:
    """The cluster's rolling upgrade as stored in Redis and driven by the leader
    (deploy/rollout.py's Rollout is the host-by-host switch of releases over SSH)."""

    id: str
    state: RolloutState
    max_unavailable: int
    timeout: float  # seconds one node may take, from its command to a ready new master
    order: tuple[str, ...]
    nodes: Mapping[str, NodeRollout] = field(default_factory=dict)
    slots: frozenset[str] = frozenset()  # nodes holding an upgrade slot (Redis set)
    created_ms: int = 0
    finished_ms: int = 0
    failed_node: str = ""
    reason: str = ""
    requested_by: str = ""

    def to_hash(self) -> dict[str, str]:
        """The rollout hash's fields (the per-node entries live in their own hash)."""
        return {"id": self.id, "state": self.state.value,
                "max_unavailable": str(self.max_unavailable), "timeout": str(self.timeout),
                "order": json.dumps(list(self.order)), "created_ms": str(self.created_ms),
                "finished_ms": str(self.finished_ms), "failed_node": self.failed_node,
                "reason": self.reason, "requested_by": self.requested_by}

    @classmethod
    def from_hashes(cls, head: Mapping[str, str], entries: Mapping[str, str],
                    slots: Iterable[str]) -> RolloutRecord | None:
        if not head.get("id"):
            return None
        return cls(id=head["id"], state=RolloutState(head.get("state", "running")),
                   max_unavailable=int(head.get("max_unavailable") or 1),
                   timeout=float(head.get("timeout") or DEFAULT_NODE_TIMEOUT),
                   order=tuple(json.loads(head.get("order") or "[]")),
                   nodes={n: NodeRollout.decode(n, text) for n, text in entries.items()},
                   slots=frozenset(slots), created_ms=int(head.get("created_ms") or 0),
                   finished_ms=int(head.get("finished_ms") or 0),
                   failed_node=head.get("failed_node", ""), reason=head.get("reason", ""),
                   requested_by=head.get("requested_by", ""))

    def entries(self) -> list[NodeRollout]:
        """The node entries in rollout order."""
        return [self.nodes[n] for n in self.order if n in self.nodes]

    def in_step(self, step: Step) -> list[NodeRollout]:
        return [e for e in self.entries() if e.step is step]

    def as_json(self) -> dict:
        return {"id": self.id, "state": self.state.value, "max_unavailable": self.max_unavailable,
                "timeout": self.timeout, "created_ms": self.created_ms,
                "finished_ms": self.finished_ms, "failed_node": self.failed_node,
                "reason": self.reason, "upgrading": sorted(self.slots),
                "nodes": [{"node_id": e.node_id, "step": e.step.value,
                           "old_release": e.old_release, "new_release": e.new_release,
                           "old_incarnation": e.old_incarnation,
                           "new_incarnation": e.new_incarnation, "seconds": e.took(),
                           "reason": e.reason} for e in self.entries()]}


# -- judging one upgrading node --------------------------------------------------------


class UpgradeVerdict(Enum):
    """What judge() says of one upgrading node."""

    WAIT = "wait"
    DONE = "done"
    FAILED = "failed"
    REISSUE = "reissue"  # issued by an older leader and never started: send it again


@dataclass(frozen=True)
class Judgement:
    verdict: UpgradeVerdict
    reason: str = ""
    record: NodeRecord | None = None  # the new incarnation, when done


SERVING_STATES = frozenset({NodeState.READY, NodeState.DRAINING})


def judge(entry: NodeRollout, record: NodeRecord | None, node_events: list[Event],
          now_ms: int, timeout: float, my_epoch: int) -> Judgement:
    """Decide what an upgrading node's facts mean. `node_events` are this node's events
    since its upgrade was issued, oldest first. A node gone or declared dead meanwhile
    is not failed at once: an old master that dies mid-upgrade leaves its new master
    booting, which takes over when ready; only the timeout ends the wait."""
    rolled_back = [e for e in node_events if e.kind == ev.UPGRADE_ROLLED_BACK]
    if rolled_back:
        return Judgement(UpgradeVerdict.FAILED, f"rolled back: {rolled_back[-1].reason or 'no reason'}")
    if record is not None and record.alive and record.incarnation > entry.old_incarnation:
        if record.info.pid == entry.old_pid:
            # The old master registered again: it rolled back (its event may be lost).
            return Judgement(UpgradeVerdict.FAILED, "rolled back: the old master is serving again")
        if record.info.state in SERVING_STATES and record.info.workers > 0:
            return Judgement(UpgradeVerdict.DONE, f"new master pid {record.info.pid} ready", record)
    elapsed = (now_ms - entry.started_ms) / 1000
    if elapsed > timeout:
        return Judgement(UpgradeVerdict.FAILED, f"no new master ready within {timeout:g}s")
    started = any(e.kind == ev.UPGRADE_STARTED for e in node_events)
    if (entry.epoch < my_epoch and not started and record is not None and record.alive
            and record.incarnation == entry.old_incarnation
            and record.info.state in SERVING_STATES):
        # Issued under an older epoch, so the node's fence may have rejected it; the
        # master ignores a second upgrade while one runs, so re-sending is safe.
        return Judgement(UpgradeVerdict.REISSUE, f"issued at epoch {entry.epoch} and not started")
    return Judgement(UpgradeVerdict.WAIT, f"upgrading for {elapsed:.1f}s")


def next_candidates(rollout: RolloutRecord, me: str) -> list[NodeRollout]:
    """Pending nodes in rollout order, the leader's own node last (upgrading it hands
    the lease over, so it is kept for when nothing else is left)."""
    pending = rollout.in_step(Step.PENDING)
    return sorted(pending, key=lambda e: e.node_id == me)


def free_slots(rollout: RolloutRecord, records: Mapping[str, NodeRecord],
               finished: frozenset[str] = frozenset()) -> int:
    """How many more nodes may start now: max_unavailable, minus the slots held (but
    not those `finished` this cycle), minus rollout nodes out of service for another
    reason (a done node that died since, a pending one restarting): Kubernetes'
    meaning of max-unavailable. The Lua script still enforces the slot bound alone."""
    held = rollout.slots - finished
    down = sum(1 for e in rollout.entries()
               if e.node_id not in rollout.slots and not _serving(records.get(e.node_id)))
    return max(0, rollout.max_unavailable - len(held) - down)


def _serving(record: NodeRecord | None) -> bool:
    return record is not None and record.alive and record.info.state in SERVING_STATES
