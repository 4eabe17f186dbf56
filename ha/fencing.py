"""The node side of fencing: admit a leader's command only if it is current.

A command is rejected when its epoch is older than the highest epoch this node
has seen (from the lease, the epoch counter or an earlier command): a deposed
leader paused past its lease can never act again. It is also rejected when it
names another incarnation, so an old master's agent cannot act for a node that
was re-started by an upgrade. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from polycorn.ha.commands import NodeCommand


class FenceVerdict(Enum):
    """Why the fence admits or rejects a command."""

    ADMIT = "admit"
    STALE_EPOCH = "stale_epoch"
    OTHER_NODE = "other_node"
    OTHER_INCARNATION = "other_incarnation"


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
        self.highest_epoch = command.epoch
        return FenceDecision(FenceVerdict.ADMIT, f"command {command.id} ({command.cmd}) at epoch {command.epoch}")
