"""Is it the nodes, or Redis? The guard every reader of heartbeats applies before it
believes that nodes died: the leader's duties and the HAProxy sync.

Heartbeats all lapse together when Redis itself fails: the reader's own calls failed
recently, Redis changed under it (a new run id: a Sentinel failover or a restart,
maybe without its data), or more than half of the nodes went silent at once. In the
first two cases no lapse is believed until the recovery grace has passed; in the
third only silences that have lasted MASS_LAPSE_PATIENCE node TTLs are. Pure
functions and one small value object: the callers keep their own clocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


def judge_lapses(silent_ms: Mapping[str, int], population: int, ttl_ms: int, *,
                 stable_for: float, changed_ago: float, grace: float
                 ) -> tuple[list[str], Hold | None]:
    """Which lapsed nodes to believe gone, or why none may be believed now.

    `silent_ms`: each lapsed node and how long it has been silent (ms, >= ttl_ms);
    `population`: how many nodes the reader knows, lapsed ones included;
    `stable_for`: seconds since the reader's last failed Redis call;
    `changed_ago`: seconds since Redis' run id changed; `grace`: Timing.recovery_grace."""
    if stable_for < grace:
        return [], Hold(HoldCause.REDIS_CALLS, f"my own Redis calls failed {stable_for:.1f}s "
                        f"ago: heartbeats may have lapsed for the same reason")
    if changed_ago < grace:
        return [], Hold(HoldCause.REDIS_CHANGED, f"Redis changed under me {changed_ago:.1f}s "
                        f"ago (a new run id: a failover or a restart)")
    lapsed = list(silent_ms)  # the caller's order (the leader declares in it)
    if len(lapsed) * 2 <= population:
        return lapsed, None
    # A mass lapse is more likely Redis or the network than the nodes; only silence
    # that lasts MASS_LAPSE_PATIENCE TTLs is believed.
    long_silent = [n for n in lapsed if silent_ms[n] >= ttl_ms * MASS_LAPSE_PATIENCE]
    if long_silent:
        return long_silent, None
    return [], Hold(HoldCause.MASS_LAPSE, f"{len(lapsed)} of {population} nodes look dead "
                    f"at once: suspecting Redis or the network, not the nodes")
