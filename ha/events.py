"""Cluster events: what happened, to which node, under which epoch, and why.

Events live in one capped Redis stream (XADD MAXLEN ~), durable and replayable by
`polycorn-ctl events`; the stream id's milliseconds are the Redis server's time of
the event, so the time is never taken from a node's own clock.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

STREAM_MAXLEN = 10_000  # approximate cap (MAXLEN ~): trimming whole macro-nodes is cheap

NODE_JOINED = "node_joined"
NODE_READY = "node_ready"
NODE_DRAINING = "node_draining"
NODE_UPGRADING = "node_upgrading"
NODE_STOPPING = "node_stopping"
NODE_GONE = "node_gone"  # its agent saw its master exit
NODE_DEAD = "node_dead"  # the leader saw its heartbeat lapse, or its master reported gone
NODE_SUPERSEDED = "node_superseded"  # a newer incarnation of the node registered
LEADER_ELECTED = "leader_elected"
LEADER_RESIGNED = "leader_resigned"  # gave the lease back (shutdown, master gone, not ready)
LEADER_STEPPED_DOWN = "leader_stepped_down"  # lost the lease or its deadline passed
COMMAND_REJECTED_STALE = "command_rejected_stale"
COMMAND_REJECTED = "command_rejected"  # addressed to another incarnation, or malformed
COMMAND_RESULT = "command_result"

# The leader's duties (ha/duties.py and the modules it drives).
NODE_REJOINED = "node_rejoined"  # a node declared dead registered again (new incarnation)
NODE_FORGOTTEN = "node_forgotten"  # polycorn-ctl forget: its capacity is no longer owed
DUTIES_PAUSED = "duties_paused"  # the leader holds off (Redis unstable, mass lapse)
DUTIES_RESUMED = "duties_resumed"
CAPACITY_GRANTED = "capacity_granted"  # a survivor runs extra workers for dead nodes
CAPACITY_RETURNED = "capacity_returned"  # the extra workers are given back
CAPACITY_SHORT = "capacity_short"  # the survivors' ceilings cannot cover the dead
DRAIN_REQUESTED = "drain_requested"
UNDRAIN_REQUESTED = "undrain_requested"
ROLLOUT_STARTED = "rollout_started"
ROLLOUT_NODE_STARTED = "rollout_node_started"
ROLLOUT_NODE_REISSUED = "rollout_node_reissued"  # a new leader re-sent a stale upgrade
ROLLOUT_NODE_DONE = "rollout_node_done"
ROLLOUT_NODE_FAILED = "rollout_node_failed"
ROLLOUT_DONE = "rollout_done"
ROLLOUT_FAILED = "rollout_failed"  # halted at its first failed node
ROLLOUT_ABORTED = "rollout_aborted"  # polycorn-ctl upgrade --abort

# The event a heartbeat logs when a node's state changes to this one ("booting" logs
# none); the HEARTBEAT script and the memory store both read it.
STATE_EVENTS: dict[str, str] = {"ready": NODE_READY, "draining": NODE_DRAINING,
                                "upgrading": NODE_UPGRADING, "stopping": NODE_STOPPING}

# Relayed from the master (docs/internals.md); the rollout reads these.
UPGRADE_STARTED = "upgrade_started"
UPGRADE_PROMOTED = "upgrade_promoted"
UPGRADE_ROLLED_BACK = "upgrade_rolled_back"

# Events relayed from the master (upgrade_started, upgrade_promoted, ...) keep their name.
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Event:
    kind: str
    node: str
    epoch: int = 0  # the epoch in force for the actor (0: not an election matter)
    reason: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    id: str = ""  # stream id "ms-seq", set when read back
    time_ms: int = 0  # from the stream id

    def fields(self) -> dict[str, str]:
        return {"event": self.kind, "node": self.node, "epoch": str(self.epoch),
                "reason": self.reason, **self.extra}

    @classmethod
    def from_stream(cls, entry_id: str, fields: dict[str, str]) -> Event:
        data = dict(fields)
        kind = data.pop("event", "")
        node = data.pop("node", "")
        epoch = int(data.pop("epoch", "0") or 0)
        reason = data.pop("reason", "")
        return cls(kind, node, epoch, reason, data, entry_id, int(entry_id.split("-")[0]))

    def describe(self) -> str:
        """One line for `polycorn-ctl events`."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time_ms / 1000))
        extras = "".join(f" {k}={v}" for k, v in sorted(self.extra.items()))
        epoch = f" epoch={self.epoch}" if self.epoch else ""
        reason = f": {self.reason}" if self.reason else ""
        node = f" {self.node}" if self.node else ""  # cluster-wide events name no node
        return f"{stamp}.{self.time_ms % 1000:03d} {self.kind}{node}{epoch}{extras}{reason}"
