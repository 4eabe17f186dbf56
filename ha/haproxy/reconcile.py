"""The sync's decision, as a pure function: the registry and HAProxy's slots in, the
runtime API commands that bring the slots in step out (the leader's duties' style:
no I/O, one sentence per change, tested on values alone).

Rules, per node (the registry's word, or its silence):
- booting: a slot with its address, in maint (HAProxy knows it, sends nothing yet);
- ready: ready, weight = its running workers (so a capacity restore moves load);
- draining, or in the drained set: drain (no new requests; what it holds finishes);
- upgrading: left as it is (USR2 is lossless on the same socket);
- stopping: maint at once (it said so);
- declared dead by the leader: maint, unless HAProxy's own checks see it up;
- lapsed (heartbeat older than the TTL), or gone from the registry while its slot
  still serves: maint only if the guard believes it (ha/guard.py, the leader's rule):
  never while the sync's own Redis calls fail, nor just after Redis changed, nor when
  more than half of the cluster went silent at once; and, believed, not while
  HAProxy's own checks see it up. HAProxy's health checks take a dead server out of
  rotation in well under a second: the registry's word alone never takes out a
  server that answers them (cut from Redis, Redis refusing writes, a peer master).
Slots: a node keeps its slot (the one assigned before, or the one holding its
address after a restart of the sync); a new node takes an unused slot, then the slot
of a node that is out (maint). A slot in service is never taken: when none is left
the node waits and a warning says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from polycorn.ha.guard import Hold, judge_lapses
from polycorn.ha.haproxy.config import MAX_WEIGHT, PLACEHOLDER_ADDR, PLACEHOLDER_PORT
from polycorn.ha.haproxy.servers import Admin, ServerState

PLACEHOLDER = (PLACEHOLDER_ADDR, PLACEHOLDER_PORT)


class Presence(Enum):
    """What the registry says of a node, as far as the front is concerned."""

    BOOTING = "booting"
    READY = "ready"
    DRAINING = "draining"
    UPGRADING = "upgrading"
    STOPPING = "stopping"
    DEAD = "dead"  # declared dead by the leader
    LAPSED = "lapsed"  # its heartbeat is older than the node TTL, not declared yet


# Registry states that need a slot (to serve, or to be known before it serves).
NEEDS_SLOT = frozenset({Presence.READY, Presence.DRAINING, Presence.UPGRADING,
                        Presence.BOOTING})
SAID_OUT = frozenset({Presence.STOPPING, Presence.DEAD})  # out on the node's or leader's word


@dataclass(frozen=True)
class FrontNode:
    """One registry node: its address resolved to an IP, its state, its capacity."""

    node_id: str
    endpoint: tuple[str, int] | None  # (ip, port); None when unknown (a dead node's hash)
    presence: Presence
    workers: int = 0  # ready workers now
    drained: bool = False  # the operator asked for a drain (polycorn-ctl drain)
    silent_ms: int = 0  # how long its heartbeat has been silent (LAPSED)


@dataclass(frozen=True)
class Trust:
    """What the guard needs to know of Redis' health (ha/guard.py)."""

    ttl_ms: int
    stable_for: float  # seconds since the sync's last failed Redis call
    changed_ago: float  # seconds since Redis' run id changed
    grace: float  # Timing.recovery_grace
    recently_gone: int = 0  # lapsed nodes (or slots) taken out within the last TTL


@dataclass(frozen=True)
class Target:
    """What one slot should be; None fields are left as they are."""

    admin: Admin
    endpoint: tuple[str, int] | None = None
    weight: int | None = None


@dataclass(frozen=True)
class Change:
    slot: str
    node: str
    before: str
    after: str
    reason: str

    def line(self) -> str:
        return f"{self.node} slot {self.slot}: {self.before} -> {self.after} ({self.reason})"


@dataclass(frozen=True)
class Plan:
    commands: tuple[str, ...]
    changes: tuple[Change, ...]
    assignment: dict[str, str]  # node id -> slot, for the next cycle
    absent: frozenset[str]  # slots in service whose node the registry no longer lists
    warnings: tuple[str, ...] = ()
    hold: Hold | None = None  # why lapsed nodes were left in, if they were
    believed: tuple[str, ...] = ()  # lapsed nodes (or 'slot:NAME' of vanished ones) taken out


def weight_of(node: FrontNode) -> int:
    return max(1, min(MAX_WEIGHT, node.workers))


def describe(admin: Admin, endpoint: tuple[str, int], weight: int) -> str:
    addr = "-" if endpoint == PLACEHOLDER else f"{_host(endpoint[0])}:{endpoint[1]}"
    return f"{admin.value} {addr} weight {weight}"


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def reconcile(backend: str, nodes: Sequence[FrontNode], servers: Sequence[ServerState],
              assignment: Mapping[str, str], trust: Trust,
              absent_ms: Mapping[str, int] | None = None) -> Plan:
    """The commands that make HAProxy's slots match the registry; see the module doc.

    `assignment`: node id -> slot from the previous plan (empty at start);
    `absent_ms`: for slots the previous plans reported absent, how long (ms) they have
    been so, as the caller's clock measured it."""
    return _Reconciler(backend, nodes, servers, assignment, trust, absent_ms or {}).plan()


class _Reconciler:
    def __init__(self, backend: str, nodes: Sequence[FrontNode],
                 servers: Sequence[ServerState], assignment: Mapping[str, str],
                 trust: Trust, absent_ms: Mapping[str, int]) -> None:
        self.backend = backend
        self.nodes = {n.node_id: n for n in sorted(nodes, key=lambda n: n.node_id)}
        self.servers = {s.name: s for s in servers}
        self.order = [s.name for s in servers]  # HAProxy's order: s1, s2, ...
        self.trust = trust
        self.absent_ms = absent_ms
        self.warnings: list[str] = []
        self.wanting: list[tuple[FrontNode, Target, str]] = []  # nodes without a slot yet
        # node -> slot: the previous assignment, where both still exist, one node a slot
        self.slot_of: dict[str, str] = {}
        taken: set[str] = set()
        for node_id, slot in sorted(assignment.items()):
            if slot in self.servers and slot not in taken:
                self.slot_of[node_id] = slot
                taken.add(slot)
        # Two nodes advertising one address would be one server counted twice: the
        # node holding a slot for it keeps it, else the first by id; the other waits.
        self.duplicates: set[str] = set()
        owners: dict[tuple[str, int], str] = {}
        for node in sorted(self.nodes.values(),
                           key=lambda n: (n.node_id not in self.slot_of, n.node_id)):
            if node.endpoint is None:
                continue
            other = owners.setdefault(node.endpoint, node.node_id)
            if other != node.node_id:
                self.duplicates.add(node.node_id)
                self.warnings.append(
                    f"{node.node_id} advertises the same address as {other} "
                    f"({_host(node.endpoint[0])}:{node.endpoint[1]}): left out")

    # -- the plan -------------------------------------------------------------------

    def plan(self) -> Plan:
        self._adopt_by_address()
        believed, hold, absent = self._judge_silence()
        targets = self._targets(believed, absent)
        self._allocate(targets)
        commands: list[str] = []
        changes: list[Change] = []
        for slot in self.order:
            if slot in targets:
                node, target, reason = targets[slot]
                self._apply(slot, node, target, reason, commands, changes)
        assignment = {n: s for n, s in self.slot_of.items()
                      if n in self.nodes or self._final_admin(s, targets) is not Admin.MAINT}
        return Plan(tuple(commands), tuple(changes), assignment, frozenset(absent),
                    tuple(self.warnings), hold, tuple(believed))

    def _adopt_by_address(self) -> None:
        """A node with no slot yet takes the free slot that already holds its address
        (the sync restarted, or the node came back): its state carries over."""
        taken = set(self.slot_of.values())
        for node in self.nodes.values():
            if node.endpoint is None or node.node_id in self.slot_of \
                    or node.node_id in self.duplicates:
                continue
            for slot in self.order:
                if slot not in taken and self.servers[slot].endpoint == node.endpoint:
                    self.slot_of[node.node_id] = slot
                    taken.add(slot)
                    break

    def _judge_silence(self) -> tuple[list[str], Hold | None, dict[str, str]]:
        """The lapsed nodes (and slots whose node vanished) to take out, per the guard.
        Returns (believed node ids or slot keys, hold, absent slot -> name)."""
        slot_owner = {s: n for n, s in self.slot_of.items()}
        absent: dict[str, str] = {}
        for slot in self.order:
            owner = slot_owner.get(slot)
            if self.servers[slot].admin is not Admin.MAINT and (owner is None
                                                                 or owner not in self.nodes):
                absent[slot] = owner or f"unknown node at {self._addr(slot)}"
        silent = {n.node_id: n.silent_ms for n in self.nodes.values()
                  if n.presence is Presence.LAPSED}
        silent.update({f"slot:{s}": self.absent_ms.get(s, 0) for s in absent})
        if not silent:
            return [], None, absent
        population = sum(1 for n in self.nodes.values() if n.presence is not Presence.DEAD)
        population += len(absent)
        t = self.trust
        believed, hold = judge_lapses(silent, population, t.ttl_ms, stable_for=t.stable_for,
                                      changed_ago=t.changed_ago, grace=t.grace,
                                      recently_gone=t.recently_gone)
        return believed, hold, absent

    def _targets(self, believed: list[str], absent: dict[str, str]
                 ) -> dict[str, tuple[str, Target, str]]:
        """slot -> (node shown in the log, what the slot should be, why)."""
        targets: dict[str, tuple[str, Target, str]] = {}
        gone = set(believed)
        for node in self.nodes.values():
            slot = self.slot_of.get(node.node_id)
            target, reason = self._target(node, slot, node.node_id in gone)
            if target is None:
                continue
            if slot is None:
                self.wanting.append((node, target, reason))
            else:
                targets[slot] = (node.node_id, target, reason)
        for slot, name in absent.items():
            if f"slot:{slot}" in gone:
                current = self.servers[slot]
                if current.checked and current.op == "up":
                    # Its agent left, and no other registered yet: the gap of a USR2
                    # handover (the old generation's agent deregisters, the new one's
                    # registers moments later: chaos --random 20 took the last server in
                    # rotation out in it, 76 HTTP 503), or a primary that lost the record.
                    self.warnings.append(f"{name} left in service (gone from the "
                                         f"registry): HAProxy's checks see it up")
                    continue
                ms = self.absent_ms.get(slot, 0)
                targets[slot] = (name, Target(Admin.MAINT),
                                 f"gone from the registry for {ms / 1000:.1f}s")
        return targets

    def _target(self, node: FrontNode, slot: str | None, believed: bool
                ) -> tuple[Target | None, str]:
        """What the node's slot should be and why; None: leave it (or, without a slot,
        the node needs none)."""
        p = node.presence
        current = self.servers[slot] if slot else None
        serving = current is not None and current.admin is not Admin.MAINT
        if node.node_id in self.duplicates:
            return (Target(Admin.MAINT), "its address is another node's") if serving \
                else (None, "")
        if p is Presence.STOPPING:
            return (Target(Admin.MAINT), "registry: stopping") if current else (None, "")
        if p is Presence.DEAD or (p is Presence.LAPSED and believed):
            if current is None:
                return None, ""
            if serving and current.checked and current.op == "up":
                # HAProxy's own checks see it answer: the registry's silence is Redis'
                # trouble or the node's link to Redis, not the node's (cut from Redis,
                # writes refused, a peer master serving). Its checks take it out the
                # moment it stops answering (chaos --random 2, 6 and 8 --netns --front
                # haproxy: every node out of rotation at once, HTTP 503).
                said = "declared dead" if p is Presence.DEAD else "its heartbeat lapsed"
                self.warnings.append(f"{node.node_id} left in service ({said}): HAProxy's "
                                     f"checks see it up")
                return None, ""
            if p is Presence.DEAD:
                return Target(Admin.MAINT), "registry: declared dead"
            return Target(Admin.MAINT), f"no heartbeat for {node.silent_ms / 1000:.1f}s"
        if p is Presence.LAPSED:
            return None, ""
        if node.endpoint is None:
            return None, ""
        if p is Presence.UPGRADING or (p is Presence.BOOTING and serving):
            # USR2: the old master serves on the same socket until the new generation
            # (which registers as booting) takes over; nothing to change.
            if current is not None:
                return None, ""
            return Target(Admin.READY, node.endpoint, weight_of(node)), "upgrading, serving"
        if p is Presence.BOOTING:
            return Target(Admin.MAINT, node.endpoint), "registry: booting"
        if node.drained or p is Presence.DRAINING:
            why = "registry: draining" if p is Presence.DRAINING else "drain requested"
            return Target(Admin.DRAIN, node.endpoint, weight_of(node)), why
        return Target(Admin.READY, node.endpoint, weight_of(node)), \
            f"registry: ready, {node.workers} workers"

    def _allocate(self, targets: dict[str, tuple[str, Target, str]]) -> None:
        """Give the nodes that need a slot one: unused slots first, then slots whose
        node is out (maint, and staying so). Ready nodes are served first."""
        rank = {Presence.READY: 0, Presence.UPGRADING: 1, Presence.DRAINING: 2,
                Presence.BOOTING: 3}
        wanting = sorted(self.wanting, key=lambda w: (rank.get(w[0].presence, 9),
                                                      w[0].node_id))
        for node, target, reason in wanting:
            slot = self._free_slot(targets)
            if slot is None:
                self.warnings.append(
                    f"no free slot for {node.node_id} ({node.presence.value}): all "
                    f"{len(self.order)} slots hold nodes that serve or boot; raise --slots "
                    f"(a ready node is never evicted)")
                continue
            evicted = [n for n, s in self.slot_of.items() if s == slot]
            for n in evicted:
                del self.slot_of[n]
            self.slot_of[node.node_id] = slot
            note = f", slot taken from {evicted[0]} (out)" if evicted else ""
            targets[slot] = (node.node_id, target, reason + note)

    def _free_slot(self, targets: dict[str, tuple[str, Target, str]]) -> str | None:
        """A slot that is out and stays out: never used, then holding an address no
        node claims, then the slot of a node that is out (stopping, dead, lapsed)."""
        owners = {s: n for n, s in self.slot_of.items()}
        available = [s for s in self.order
                     if self._final_admin(s, targets) is Admin.MAINT
                     and (s not in owners or self.nodes.get(owners[s]) is None
                          or self.nodes[owners[s]].presence not in NEEDS_SLOT)]
        for preference in (lambda s: s not in owners and self.servers[s].endpoint == PLACEHOLDER,
                           lambda s: s not in owners,
                           lambda s: True):
            for slot in available:
                if preference(slot):
                    return slot
        return None

    def _final_admin(self, slot: str, targets: Mapping[str, tuple[str, Target, str]]) -> Admin:
        if slot in targets:
            return targets[slot][1].admin
        return self.servers[slot].admin

    # -- commands ---------------------------------------------------------------------

    def _apply(self, slot: str, node: str, target: Target, reason: str,
               commands: list[str], changes: list[Change]) -> None:
        cur = self.servers[slot]
        endpoint = target.endpoint or cur.endpoint
        weight = target.weight if target.weight is not None else cur.weight
        if (cur.admin, cur.endpoint, cur.weight) == (target.admin, endpoint, weight):
            return
        name = f"{self.backend}/{slot}"
        state = [f"set server {name} state {target.admin.value}"] \
            if target.admin is not cur.admin else []
        addr = [f"set server {name} addr {endpoint[0]} port {endpoint[1]}"] \
            if endpoint != cur.endpoint else []
        wgt = [f"set server {name} weight {weight}"] if weight != cur.weight else []
        # Out first, then re-addressed; in only once address and weight are right.
        commands.extend(state + addr + wgt if target.admin is Admin.MAINT
                        else addr + wgt + state)
        changes.append(Change(slot, node, describe(cur.admin, cur.endpoint, cur.weight),
                              describe(target.admin, endpoint, weight), reason))

    def _addr(self, slot: str) -> str:
        ip, port = self.servers[slot].endpoint
        return f"{_host(ip)}:{port}"
