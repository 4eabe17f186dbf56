"""Is it the nodes, or Redis? The guard every reader of heartbeats applies before it
believes that nodes died: the leader's duties and the HAProxy sync.

Heartbeats all lapse together when Redis itself fails: the reader's own calls failed
recently, Redis changed under it (a new run id: a Sentinel failover or a restart,
maybe without its data), or more than half of the nodes went silent at once. In the
first two cases no lapse is believed until the recovery grace has passed; in the
third only silences that have lasted MASS_LAPSE_PATIENCE node TTLs are. Pure
functions and two small value objects: the callers keep their own clocks.

A majority that goes silent at one moment lapses in waves, not at once: each node's
last heartbeat falls anywhere in the heartbeat period, so its silence passes the TTL up
to a period later than another's. Judged alone, each wave can be under half of the
nodes still counted (the population shrinks as the waves are believed gone): 40 of 61
nodes cut off were all declared dead in two waves of 20 (loadtests/scale.py
--cut-off 0.6). So the nodes a reader believed gone within the last TTL count with the
wave in front of it (`RecentLosses`).

Redis measures silence on its wall clock (TIME, and key expiry), and a wall clock can
step: in chaos --random 1 the VM's wall clock ran 1.2 s ahead of CLOCK_MONOTONIC, with a
1.0 s step, and a node cut from Redis was declared dead 2.65 s after its last heartbeat
with a 3 s TTL. Redis documents that expiry follows the machine's clock even for a
running instance. So a reader that has followed a node also requires the silence on its
own monotonic clock (`HeardFrom`): from the first cycle it saw the node's last
heartbeat, which is no earlier than the heartbeat itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

MASS_LAPSE_PATIENCE = 3  # node TTLs of silence before a majority lapse is believed


class HoldCause(Enum):
    REDIS_CALLS = "redis_calls"  # this reader's own Redis calls failed recently
    REDIS_CHANGED = "redis_changed"  # Redis' run id changed: failover or restart
    MASS_LAPSE = "mass_lapse"  # more than half of the nodes lapsed at once


@dataclass(frozen=True)
class Hold:
    cause: HoldCause
    reason: str


@dataclass
class RedisWatch:
    """Remembers Redis' run id and when it last changed (a failover or a restart)."""

    server_id: str = ""
    changed_at: float = float("-inf")

    def see(self, server_id: str, now: float) -> None:
        if server_id and server_id != self.server_id:
            if self.server_id:
                self.changed_at = now
            self.server_id = server_id

    def changed_ago(self, now: float) -> float:
        return now - self.changed_at


@dataclass
class RecentLosses:
    """The nodes a reader believed gone lately, and when (the reader's clock)."""

    seen: dict[str, float] = field(default_factory=dict)

    def note(self, node_ids: Iterable[str], now: float) -> None:
        for node_id in node_ids:
            self.seen[node_id] = now

    def count(self, now: float, window: float, besides: Collection[str] = ()) -> int:
        """How many were believed gone within `window` seconds and are not among
        `besides` (those the reader still counts: lapsed again, or back)."""
        self.seen = {n: t for n, t in self.seen.items() if now - t <= window}
        return sum(1 for n in self.seen if n not in besides)


@dataclass
class HeardFrom:
    """Each node's last heartbeat value seen, and when this reader first saw it (its own
    monotonic clock). A node not followed yet (a reader just elected) is judged on
    Redis' clock alone, as before: the reader has nothing better."""

    seen: dict[str, tuple[int, float]] = field(default_factory=dict)

    def see(self, heartbeats: Mapping[str, int], now: float) -> None:
        for node_id, heartbeat_ms in heartbeats.items():
            last = self.seen.get(node_id)
            if last is None or last[0] != heartbeat_ms:
                self.seen[node_id] = (heartbeat_ms, now)
        for node_id in self.seen.keys() - heartbeats.keys():
            del self.seen[node_id]

    def silent_long_enough(self, node_id: str, now: float, ttl: float,
                           followed_since: float) -> bool:
        """True unless this reader saw the node's current heartbeat less than `ttl`
        seconds ago, on its own clock. Nodes first seen at `followed_since` (the reader's
        first look) are judged by Redis alone."""
        last = self.seen.get(node_id)
        if last is None or last[1] <= followed_since:
            return True
        return now - last[1] >= ttl

    def forget(self) -> None:
        self.seen.clear()


def judge_lapses(silent_ms: Mapping[str, int], population: int, ttl_ms: int, *,
                 stable_for: float, changed_ago: float, grace: float,
                 recently_gone: int = 0) -> tuple[list[str], Hold | None]:
    """Which lapsed nodes to believe gone, or why none may be believed now.

    `silent_ms`: each lapsed node and how long it has been silent (ms, >= ttl_ms);
    `population`: how many nodes the reader knows, lapsed ones included;
    `stable_for`: seconds since the reader's last failed Redis call;
    `changed_ago`: seconds since Redis' run id changed; `grace`: Timing.recovery_grace;
    `recently_gone`: nodes believed gone within the last TTL, no longer in `population`
    (the earlier waves of the same silence, see the module doc)."""
    if stable_for < grace:
        return [], Hold(HoldCause.REDIS_CALLS, f"my own Redis calls failed {stable_for:.1f}s "
                        f"ago: heartbeats may have lapsed for the same reason")
    if changed_ago < grace:
        return [], Hold(HoldCause.REDIS_CHANGED, f"Redis changed under me {changed_ago:.1f}s "
                        f"ago (a new run id: a failover or a restart)")
    lapsed = list(silent_ms)  # the caller's order (the leader declares in it)
    at_once, counted = len(lapsed) + recently_gone, population + recently_gone
    if at_once * 2 <= counted:
        return lapsed, None
    # A mass lapse is more likely Redis or the network than the nodes; only silence
    # that lasts MASS_LAPSE_PATIENCE TTLs is believed.
    long_silent = [n for n in lapsed if silent_ms[n] >= ttl_ms * MASS_LAPSE_PATIENCE]
    if long_silent:
        return long_silent, None
    earlier = f" ({recently_gone} of them believed gone in the last TTL)" if recently_gone else ""
    return [], Hold(HoldCause.MASS_LAPSE, f"{at_once} of {counted} nodes look dead at "
                    f"once{earlier}: suspecting Redis or the network, not the nodes")
