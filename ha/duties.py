"""What the leader does each cycle: declare nodes dead whose heartbeat lapsed.

Every action is fenced twice: the local deadline is checked right before each
store call, and the store's Lua refuses the call unless the caller's exact lease
is the lease. Nothing drastic happens while Redis itself looks unhealthy (this
agent's own calls failed within the last node TTL, e.g. during a Sentinel
failover every heartbeat lapses at once) or when most nodes look dead at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from polycorn.ha.election import Election
from polycorn.ha.registry import lapsed_members
from polycorn.ha.snapshot import ClusterSnapshot
from polycorn.ha.store import ClusterStore

MASS_LAPSE_PATIENCE = 3  # node TTLs of silence before a majority lapse is believed


class LeaderDuties:
    def __init__(self, store: ClusterStore, election: Election,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.election = election
        self.clock = clock

    def cycle(self, snap: ClusterSnapshot, store_stable_for: float) -> str | None:
        """Run the duties once; a sentence when something was decided, else None."""
        if not self.election.is_leader(self.clock()):
            return None
        ttl = self.election.timing.node_ttl
        lapsed = lapsed_members(snap, int(ttl * 1000), self.election.node_id)
        if not lapsed:
            return None
        if store_stable_for < ttl:
            return (f"not declaring {', '.join(lapsed)} dead: my own Redis calls failed "
                    f"{store_stable_for:.1f}s ago, heartbeats may have lapsed for the same reason")
        if len(lapsed) * 2 > len(snap.members):
            # A mass lapse is more likely Redis or the network than the nodes; only
            # silence that lasts MASS_LAPSE_PATIENCE TTLs is believed.
            patience_ms = int(ttl * MASS_LAPSE_PATIENCE * 1000)
            long_silent = [n for n in lapsed
                           if snap.now_ms - snap.member(n).heartbeat_ms >= patience_ms]
            if not long_silent:
                return (f"not declaring {len(lapsed)} of {len(snap.members)} nodes dead at "
                        f"once yet: suspecting Redis or the network, not the nodes")
            lapsed = long_silent
        return self._declare(snap, lapsed)

    def _declare(self, snap: ClusterSnapshot, lapsed: list[str]) -> str:
        declared = []
        for node_id in lapsed:
            if not self.election.is_leader(self.clock()):  # the deadline may pass mid-way
                break
            member = snap.member(node_id)
            age = (snap.now_ms - member.heartbeat_ms) / 1000 if member else 0.0
            lease = self.election.lease
            assert lease is not None
            if self.store.declare_dead(lease, node_id, int(self.election.timing.node_ttl * 1000),
                                       f"no heartbeat for {age:.1f}s"):
                declared.append(f"{node_id} (silent {age:.1f}s)")
        if not declared:
            return "no node declared dead: the store refused (lease or heartbeat changed)"
        return f"declared dead at epoch {self.election.epoch}: {', '.join(declared)}"
