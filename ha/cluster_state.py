"""ClusterState: everything the cluster keeps in Redis, read at once: the election
snapshot, the nodes' registrations and the duties' own records. The leader reads one
per duty cycle; polycorn-ctl status and the HAProxy sync read it too.

Like ElectionSnapshot (snapshot.py), an immutable value with no policy: the nodes'
registrations, the roster of capacity the cluster is owed, the death sentences, the
extra workers granted, the drain requests and the rollout. Every decision of one
cycle looks at the same state; every write it leads to is a compare-and-set in Lua.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from polycorn.ha.registry import NodeRecord
from polycorn.ha.rollout import RolloutRecord
from polycorn.ha.snapshot import ElectionSnapshot


@dataclass(frozen=True)
class DeadNode:
    """A node the leader declared dead; it stays owed capacity until it rejoins."""

    node_id: str
    since_ms: int  # Redis server time of the declaration
    reason: str
    epoch: int  # the declaring leader's epoch
    by: str  # the declaring leader

    @classmethod
    def decode(cls, node_id: str, text: str) -> DeadNode:
        try:
            d = json.loads(text)
            return cls(node_id, int(d.get("since_ms") or 0), str(d.get("reason") or ""),
                       int(d.get("epoch") or 0), str(d.get("by") or ""))
        except (ValueError, TypeError, AttributeError):
            return cls(node_id, 0, "unreadable record", 0, "")


@dataclass(frozen=True)
class Grant:
    """Extra workers the leader asked one incarnation of a node to run (set_workers)."""

    incarnation: int
    target: int  # the set_workers count sent
    extra: int  # target minus the node's configured workers
    sent_ms: int  # Redis server time of the (last) command
    covering: tuple[str, ...] = ()  # the dead nodes this capacity stands in for

    def encode(self) -> str:
        return json.dumps({"incarnation": self.incarnation, "target": self.target,
                           "extra": self.extra, "sent_ms": self.sent_ms,
                           "covering": list(self.covering)}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> Grant | None:
        try:
            d = json.loads(text)
            return cls(int(d["incarnation"]), int(d["target"]), int(d["extra"]),
                       int(d["sent_ms"]), tuple(str(n) for n in d.get("covering") or ()))
        except (ValueError, TypeError, KeyError):
            return None


class ClusterState(NamedTuple):
    snap: ElectionSnapshot
    records: tuple[NodeRecord, ...]  # every member with its registration (alive or not)
    roster: Mapping[str, int]  # node -> workers_configured, for every node that served
    dead: Mapping[str, DeadNode]
    lost: Mapping[str, str]  # node -> why its agent reported its master gone
    grants: Mapping[str, Grant]
    drained: frozenset[str]
    rollout: RolloutRecord | None
    server_id: str  # Redis run id: a change means a failover or a restart

    @property
    def now_ms(self) -> int:
        return self.snap.now_ms

    def record(self, node_id: str) -> NodeRecord | None:
        return next((r for r in self.records if r.info.node_id == node_id), None)

    def alive(self) -> list[NodeRecord]:
        return [r for r in self.records if r.alive]
