"""What the leader does each cycle: declare the dead, restore capacity, carry out
drain requests and rolling upgrades, in that order, from one view of the cluster.

Every action is fenced twice: the local deadline is checked before each duty, and
the store's Lua refuses any write unless the caller's exact lease is the lease.
Before acting the leader asks whether Redis itself looks unhealthy: its own calls
failed, or Redis changed under it (a new run id: a Sentinel failover or a
restart), within the recovery grace (a node TTL plus the back-off and the call a
node may still be in when Redis returns), or more than half of the nodes lapsed.
Every heartbeat lapses together in those cases, so the leader pauses all duties
(an event says why) rather than declare healthy nodes dead and move their work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

from polycorn.ha import events as ev
from polycorn.ha.capacity import CapacityDuty
from polycorn.ha.cluster_state import ClusterState
from polycorn.ha.decision import Decision
from polycorn.ha.drain import DrainDuty
from polycorn.ha.election import Election
from polycorn.ha.events import Event
from polycorn.ha.guard import HeardFrom, Hold, RecentLosses, RedisWatch, judge_lapses
from polycorn.ha.registry import lapsed_members
from polycorn.ha.rollout_duty import RolloutDuty
from polycorn.ha.snapshot import Lease
from polycorn.ha.store import ClusterStore
from polycorn.server import instrument


class Mode(Enum):
    ACTIVE = "active"
    PAUSED = "paused"


class LeaderDuties:
    def __init__(self, store: ClusterStore, election: Election,
                 clock: Callable[[], float] = time.monotonic,
                 started: float | None = None) -> None:
        self.store = store
        self.election = election
        self.clock = clock
        # This agent's start (now, by default): it saw no Redis before it.
        self.started = clock() if started is None else started
        self.mode = Mode.ACTIVE
        self.hold: Hold | None = None  # why the duties are paused, while they are
        self.paused_at = 0.0
        self.redis = RedisWatch()  # Redis' run id last seen; survives leadership changes
        self.silenced = RecentLosses()  # lapsed nodes this leader declared dead lately
        self.heard = HeardFrom()  # each node's last heartbeat, on this leader's clock
        self.followed_since: float | None = None  # this leadership's first look
        self.capacity = CapacityDuty(store)
        self.drain = DrainDuty(store)
        self.rollout = RolloutDuty(store)

    def watch_redis(self, server_id: str) -> None:
        """Every agent's cycle read names Redis' run id, leader or not: a leader elected
        just after a failover must know that its Redis just changed. Only the leader's own
        reads watched it before, and a node elected right after a SENTINEL FAILOVER that
        promoted a primary with seconds-old data declared nodes dead on that data (chaos
        --random 4, 5 and 19: 'no heartbeat for 11.4s' of a node heartbeating all along)."""
        self.redis.see(server_id, self.clock())

    @property
    def ttl(self) -> float:
        return self.election.timing.node_ttl

    def cycle(self, store_stable_for: float) -> Decision | None:
        """Run the duties once; a Decision when something was decided, else None.
        `store_stable_for`: seconds since this agent's last failed Redis call."""
        if not self.election.is_leader(self.clock()):
            self._forget()
            return None
        lease = self.election.lease
        assert lease is not None
        view = self.store.cluster_state(int(self.ttl * 1000))
        believed, hold = self._judge_health(view, store_stable_for)
        if hold is not None:
            return self._pause(hold, lease)
        said = [self._resume(lease)] if self.mode is Mode.PAUSED else []
        declared = self._declare(view, lease, believed)
        if declared:
            said.append(declared)
            view = self.store.cluster_state(int(self.ttl * 1000))  # the survivors act on it now
        for duty in (self.capacity, self.drain, self.rollout):
            if not self.election.is_leader(self.clock()):  # the deadline may pass mid-way
                break
            sentence = duty.cycle(view, lease)
            if sentence:
                said.append(sentence)
        return Decision("; ".join(said)) if said else None

    # -- is Redis itself healthy? ------------------------------------------------------

    def _judge_health(self, view: ClusterState, store_stable_for: float
                      ) -> tuple[list[str], Hold | None]:
        """The lapsed nodes to believe dead, or why no duty may run now (ha/guard.py)."""
        now = self.clock()
        self.redis.see(view.server_id, now)
        members = view.snap.members
        if self.followed_since is None:
            self.followed_since = now
        self.heard.see({m.node_id: m.heartbeat_ms for m in members}, now)
        ttl_ms = int(self.ttl * 1000)
        # An agent younger than the recovery grace cannot know whether Redis changed just
        # before it started (a failover to a primary with old data): it judges nobody on
        # Redis' clock alone, only on silence it saw itself for a TTL. chaos --random 19:
        # a master restarted after kill-leader, its new agent elected 0.2 s later on a
        # primary promoted 1.4 s earlier, declared n2 dead ("no heartbeat for 8.4s") 2.9 s
        # after n2's heartbeat on the other primary.
        fresh = now - self.started < self.election.timing.recovery_grace
        followed_since = float("-inf") if fresh else self.followed_since
        silent = {n: view.now_ms - view.snap.member(n).heartbeat_ms
                  for n in lapsed_members(view.snap, ttl_ms, self.election.node_id)
                  if self.heard.silent_long_enough(n, now, self.ttl, followed_since)}
        return judge_lapses(silent, len(members), ttl_ms,
                            stable_for=store_stable_for, changed_ago=self.redis.changed_ago(now),
                            grace=self.election.timing.recovery_grace,
                            recently_gone=self.silenced.count(
                                now, self.ttl, {m.node_id for m in members}))

    def _pause(self, hold: Hold, lease: Lease) -> Decision:
        if self.mode is Mode.PAUSED and self.hold is not None and self.hold.cause is hold.cause:
            self.hold = hold
            return Decision(f"holding off, {hold.reason}", routine_topic="holding off")
        if self.mode is Mode.ACTIVE:
            self.paused_at = self.clock()
        self.mode, self.hold = Mode.PAUSED, hold
        self.store.emit(Event(ev.DUTIES_PAUSED, lease.holder, lease.epoch, hold.reason,
                              {"cause": hold.cause.value}))
        return Decision(f"pausing my duties: {hold.reason}")

    def _resume(self, lease: Lease) -> str:
        paused_for = self.clock() - self.paused_at
        cause = self.hold.cause.value if self.hold else ""
        self.mode, self.hold = Mode.ACTIVE, None
        reason = f"after {paused_for:.1f}s paused"
        self.store.emit(Event(ev.DUTIES_RESUMED, lease.holder, lease.epoch, reason,
                              {"cause": cause}))
        return f"resuming my duties {reason}"

    def _forget(self) -> None:
        """Not (or no longer) the leader: the next leadership starts afresh."""
        self.mode, self.hold = Mode.ACTIVE, None
        self.heard.forget()
        self.followed_since = None
        self.capacity.forget()
        self.drain.forget()

    # -- declaring the dead ------------------------------------------------------------

    def _declare(self, view: ClusterState, lease: Lease, lapsed: list[str]) -> str | None:
        reasons = {}
        for node_id in lapsed:
            member = view.snap.member(node_id)
            age = (view.now_ms - member.heartbeat_ms) / 1000 if member else 0.0
            reasons[node_id] = (f"no heartbeat for {age:.1f}s", f"silent {age:.1f}s")
        for node_id, why in sorted(view.lost.items()):
            if view.record(node_id) is None:
                reasons[node_id] = (f"its agent reported its master gone: {why}", "master gone")
        declared = []
        ttl_ms = int(self.ttl * 1000)
        for node_id, (reason, short) in reasons.items():
            if not self.election.is_leader(self.clock()):  # the deadline may pass mid-way
                break
            if self.store.declare_dead(lease, node_id, ttl_ms, reason):
                declared.append(f"{node_id} ({short})")
                if node_id in lapsed:
                    self.silenced.note((node_id,), self.clock())
                instrument.current().event(instrument.NODE_DEAD, node_id)  # by the leader only
        if not reasons:
            return None
        if not declared:
            return "no node declared dead: the store refused (lease or heartbeat changed)"
        return f"declared dead at epoch {lease.epoch}: {', '.join(declared)}"
