"""The node side of fencing: admit a leader's command only if it is current.

A command is rejected when its epoch is older than the highest epoch this node
has seen (from the lease, the epoch counter or an earlier command): a deposed
leader paused past its lease can never act again. It is also rejected when it
names another incarnation, so an old master's agent cannot act for a node that
was re-started by an upgrade, and when it was applied already: a Sentinel failover
can promote a replica whose copy of the node's queue still holds a command this
agent popped from the old primary (chaos --random 20: a `set_workers 3` applied a
second time after a later `set_workers 2` of the same epoch). Pure: no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

from polycorn.ha.commands import NodeCommand


class FenceVerdict(Enum):
    """Why the fence admits or rejects a command."""

    ADMIT = "admit"
    STALE_EPOCH = "stale_epoch"
    OTHER_NODE = "other_node"
    OTHER_INCARNATION = "other_incarnation"
    REPLAYED = "replayed"


# Ids of applied commands remembered per agent. A replay comes from a replica's copy of
# the queue, which holds at most the commands of the last few cycles; 4096 is far more
# than a leader queues for one node between two failovers.
REMEMBERED_IDS = 4096


@dataclass(frozen=True)
class FenceDecision:
    verdict: FenceVerdict
    reason: str

    @property
    def admitted(self) -> bool:
        return self.verdict is FenceVerdict.ADMIT


class Fence:
    def __init__(self, node_id: str, incarnation: int = 0) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        self.highest_epoch = 0
        self._applied: OrderedDict[str, None] = OrderedDict()

    def observe(self, epoch: int) -> None:
        """Record an epoch seen anywhere (lease, counter): the fence only rises."""
        self.highest_epoch = max(self.highest_epoch, epoch)

    def admit(self, command: NodeCommand) -> FenceDecision:
        if command.node_id != self.node_id:
            return FenceDecision(FenceVerdict.OTHER_NODE,
                            f"command {command.id} is for node {command.node_id}, not {self.node_id}")
        if command.incarnation != self.incarnation:
            return FenceDecision(FenceVerdict.OTHER_INCARNATION,
                            f"command {command.id} is for incarnation {command.incarnation}, "
                            f"this agent serves incarnation {self.incarnation}")
        if command.epoch < self.highest_epoch:
            return FenceDecision(FenceVerdict.STALE_EPOCH,
                            f"command {command.id} ({command.cmd}) carries epoch {command.epoch}, "
                            f"older than epoch {self.highest_epoch} already seen")
        if command.id in self._applied:
            return FenceDecision(FenceVerdict.REPLAYED,
                            f"command {command.id} ({command.cmd}) at epoch {command.epoch} "
                            f"was applied already (a replica's copy of the queue, replayed "
                            f"after a failover)")
        self.highest_epoch = command.epoch
        self._applied[command.id] = None
        if len(self._applied) > REMEMBERED_IDS:
            self._applied.popitem(last=False)
        return FenceDecision(FenceVerdict.ADMIT, f"command {command.id} ({command.cmd}) at epoch {command.epoch}")
