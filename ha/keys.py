"""Every Redis key of one cluster, named in one place.

All keys share the hash tag `{cluster}` so a Redis Cluster would keep them on one
slot (Lua scripts touch several at once); the layout is documented in ha/README.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(kind: str, value: str) -> str:
    """Cluster names and node ids appear inside keys and lease values: keep them plain."""
    if not NAME_PATTERN.match(value):
        raise ValueError(f"{kind} {value!r} must be 1-128 of letters, digits, '.', '_' or '-'")
    return value


@dataclass(frozen=True)
class ClusterKeys:
    cluster: str

    @property
    def prefix(self) -> str:
        return f"polycorn:{{{self.cluster}}}"

    @property
    def lease(self) -> str:  # string "epoch:node_id", PX = lease
        return f"{self.prefix}:lease"

    @property
    def epoch(self) -> str:  # counter, INCR on every successful acquisition
        return f"{self.prefix}:epoch"

    @property
    def members(self) -> str:  # sorted set node_id -> last heartbeat (server ms)
        return f"{self.prefix}:members"

    @property
    def incarnations(self) -> str:  # hash node_id -> incarnation counter (never expires)
        return f"{self.prefix}:incarnations"

    @property
    def events(self) -> str:  # capped stream of cluster events
        return f"{self.prefix}:events"

    def node(self, node_id: str) -> str:  # hash of one node's registration, PX = node TTL
        return f"{self.prefix}:node:{node_id}"

    def commands(self, node_id: str, incarnation: int) -> str:
        # list of fenced commands for one incarnation of a node: an old master's agent
        # never even sees the commands meant for the node's new incarnation
        return f"{self.prefix}:commands:{node_id}:{incarnation}"

    # -- the leader's duties (ha/duties.py); layout in ha/README.md --------------------

    @property
    def roster(self) -> str:  # hash node_id -> workers_configured of every node that served
        return f"{self.prefix}:roster"

    @property
    def dead(self) -> str:  # hash node_id -> JSON of its death sentence (until it rejoins)
        return f"{self.prefix}:dead"

    @property
    def lost(self) -> str:  # hash node_id -> reason its agent reported its master gone
        return f"{self.prefix}:lost"

    @property
    def grants(self) -> str:  # hash node_id -> JSON of the extra workers the leader granted
        return f"{self.prefix}:grants"

    @property
    def drained(self) -> str:  # set of node ids the operator asked to drain
        return f"{self.prefix}:drained"

    @property
    def rollout(self) -> str:  # hash: the current (or last) rolling upgrade
        return f"{self.prefix}:rollout"

    @property
    def rollout_nodes(self) -> str:  # hash node_id -> JSON of that node's step in the rollout
        return f"{self.prefix}:rollout:nodes"

    @property
    def rollout_slots(self) -> str:  # set of node ids upgrading now (at most max_unavailable)
        return f"{self.prefix}:rollout:slots"
