"""ElectionSnapshot: what every agent reads once per cycle to campaign (lease, epoch
counter, members' heartbeats, Redis' time), in one cheap atomic read. An agent's
cycle reads it without the members (they are for the leader's duties and polycorn-ctl).

Patroni's model: every decision in a cycle looks at the same snapshot, and each
entry carries what a later compare-and-set needs (the lease's epoch). No policy here.
The leader's wider read, with the registrations and the duties' records, is
ClusterState (cluster_state.py), which holds one of these.
"""

from __future__ import annotations

from typing import NamedTuple


class Lease(NamedTuple):
    holder: str  # node id of the leader
    epoch: int  # fencing token granted with the lease (from INCR)

    def encode(self) -> str:
        return f"{self.epoch}:{self.holder}"

    @classmethod
    def decode(cls, value: str | None) -> Lease | None:
        if not value:
            return None
        epoch, _, holder = value.partition(":")
        return cls(holder, int(epoch))


class Member(NamedTuple):
    node_id: str
    heartbeat_ms: int  # Redis server time of its last heartbeat


class ElectionSnapshot(NamedTuple):
    now_ms: int  # Redis server time when the snapshot was read
    lease: Lease | None
    epoch: int  # highest epoch ever granted (the counter); 0 before any election
    members: tuple[Member, ...]
    server_id: str = ""  # Redis' run id, where the read carries it (a change: a failover)

    def member(self, node_id: str) -> Member | None:
        return next((m for m in self.members if m.node_id == node_id), None)
