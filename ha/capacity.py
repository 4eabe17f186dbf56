"""Capacity restore: while nodes are dead, the survivors run their workers for them.

The roster remembers the configured workers of every node that served; a node
the leader declared dead is owed its share until it registers again (or the
operator forgets it). `plan_capacity` spreads what is owed one worker at a time
over the ready survivors, fewest extra first, within each one's --max-workers
ceiling. The duty turns the plan into fenced set_workers commands (a set_workers
is the master's TTIN with an absolute count, so repeating it is harmless), and
records each grant in Redis with the command, so a new leader knows which extra
workers are the cluster's to give back and never touches an operator's own TTIN.
"""

from __future__ import annotations

from dataclasses import dataclass

from polycorn.ha import events as ev
from polycorn.ha.cluster_state import ClusterState, Grant
from polycorn.ha.commands import NodeCommand
from polycorn.ha.events import Event
from polycorn.ha.registry import NodeRecord, NodeState
from polycorn.ha.snapshot import Lease
from polycorn.ha.store import ClusterStore

GRANT_CONFIRM_MS = 3000  # a grant the node's workers_target does not show by then is re-sent


@dataclass(frozen=True)
class CapacityPlan:
    covering: tuple[str, ...]  # the dead nodes whose workers are owed
    owed: int
    extra: dict[str, int]  # survivor -> extra workers (only those with some)
    short: int  # owed workers no survivor has room for

    def describe(self) -> str:
        return f"covering {', '.join(self.covering)}: {self.owed} workers owed"


def plan_capacity(view: ClusterState) -> CapacityPlan:
    """Spread the dead nodes' workers over the ready survivors (pure)."""
    covering = tuple(sorted(n for n in view.dead if n in view.roster))
    owed = sum(view.roster[n] for n in covering)
    survivors = sorted((r for r in view.alive() if _is_survivor(r, view)),
                       key=lambda r: r.info.node_id)
    room = {r.info.node_id: max(0, r.info.max_workers - r.info.workers_configured)
            for r in survivors}
    extra = dict.fromkeys(room, 0)
    for _ in range(owed):
        open_nodes = [n for n in extra if extra[n] < room[n]]
        if not open_nodes:
            break
        extra[min(open_nodes, key=lambda n: (extra[n], n))] += 1
    placed = sum(extra.values())
    return CapacityPlan(covering, owed, {n: e for n, e in extra.items() if e}, owed - placed)


def _is_survivor(record: NodeRecord, view: ClusterState) -> bool:
    node_id = record.info.node_id
    # A drained node is out of the load balancer's rotation: extra workers there serve
    # nobody, so they go to the others.
    return (record.info.state is NodeState.READY and node_id not in view.drained
            and node_id not in view.dead)


class CapacityDuty:
    def __init__(self, store: ClusterStore) -> None:
        self.store = store
        self.short_reported = 0  # last shortfall logged as an event (changes only)

    def forget(self) -> None:
        self.short_reported = 0

    def cycle(self, view: ClusterState, lease: Lease) -> str | None:
        plan = plan_capacity(view)
        records = sorted(view.alive(), key=lambda r: r.info.node_id)  # a stable order
        said = [s for r in records if (s := self._node(view, lease, plan, r))]
        if plan.short != self.short_reported:
            self.short_reported = plan.short
            if plan.short:
                reason = (f"{plan.short} of {plan.owed} owed workers have no room: the "
                          f"survivors are at their --max-workers ceilings")
                self.store.emit(Event(ev.CAPACITY_SHORT, lease.holder, lease.epoch, reason))
                said.append(reason)
        if not said:
            return None
        return f"capacity ({plan.describe()}): {'; '.join(said)}"

    def _node(self, view: ClusterState, lease: Lease, plan: CapacityPlan,
              record: NodeRecord) -> str | None:
        node_id, info = record.info.node_id, record.info
        extra = plan.extra.get(node_id, 0)
        target = info.workers_configured + extra
        grant = view.grants.get(node_id)
        if grant is not None and grant.incarnation != record.incarnation:
            # Granted to an earlier incarnation (the node restarted or upgraded): the new
            # master runs its configured count, so the old grant means nothing now.
            if extra == 0:
                self._close(lease, record)
                return None
            grant = None
        if grant is None:
            if extra == 0:
                return None
            return self._grant(view, lease, record, plan, target, ev.CAPACITY_GRANTED)
        if grant.target != target:
            kind = ev.CAPACITY_GRANTED if extra else ev.CAPACITY_RETURNED
            return self._grant(view, lease, record, plan, target, kind)
        if info.workers_target == target:
            if extra == 0:  # given back and confirmed: the grant is closed
                self._close(lease, record)
            return None
        if view.now_ms - grant.sent_ms >= GRANT_CONFIRM_MS:
            # The node does not show the count after a while: the command was lost (its
            # queue expired, the agent restarted). set_workers is safe to repeat.
            self._grant(view, lease, record, plan, target, "")
            return f"{node_id} re-sent set_workers {target} (it reports {info.workers_target})"
        return None

    def _grant(self, view: ClusterState, lease: Lease, record: NodeRecord, plan: CapacityPlan,
               target: int, kind: str) -> str:
        info = record.info
        extra = target - info.workers_configured
        grant = Grant(record.incarnation, target, extra, view.now_ms, plan.covering)
        command = NodeCommand(info.node_id, record.incarnation, lease.epoch, "set_workers",
                              target, issued_by=lease.holder)
        if kind == ev.CAPACITY_RETURNED:
            reason = f"giving back: {info.workers_configured} workers as configured"
        else:
            reason = f"{plan.describe()}; +{extra} within a ceiling of {info.max_workers}"
        self.store.grant_workers(lease, info.node_id, grant, command, kind, reason)
        return f"{info.node_id} -> {target} workers"

    def _close(self, lease: Lease, record: NodeRecord) -> None:
        self.store.grant_workers(lease, record.info.node_id, None, None, "", "")
