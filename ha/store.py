"""The store interface the agent and polycorn-ctl program against, grouped by guarantee.

Two implementations: redis_store.RedisStore (Lua scripts, the real thing) and
memory_store.MemoryStore (a dict and a fake clock, so the election and the agent's
decisions are tested without Redis). Every method is one atomic step on the store;
a failure to reach the store raises StoreUnavailable and nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum

from polycorn.ha.commands import NodeCommand
from polycorn.ha.events import Event
from polycorn.ha.registry import NodeInfo, NodeRecord
from polycorn.ha.snapshot import ClusterSnapshot, Lease


class StoreUnavailable(Exception):
    """The store could not be reached (or timed out) within the call bound."""


class Heartbeat(Enum):
    REFRESHED = "refreshed"
    REJOINED = "rejoined"  # the hash had expired or was removed: it was re-created
    SUPERSEDED = "superseded"  # a newer incarnation of this node id has registered


class ClusterStore(ABC):
    # -- reads: one consistent view per call ----------------------------------------

    @abstractmethod
    def snapshot(self) -> ClusterSnapshot:
        """Lease, epoch counter, members and server time, read atomically."""

    @abstractmethod
    def nodes(self, ttl_ms: int) -> tuple[ClusterSnapshot, list[NodeRecord]]:
        """The snapshot plus every member's registration (for polycorn-ctl)."""

    @abstractmethod
    def read_events(self, after: str = "0", count: int = 100,
                    block_ms: int | None = None) -> list[Event]:
        """Events with a stream id greater than `after`, oldest first."""

    # -- compare-and-create: the lease ----------------------------------------------

    @abstractmethod
    def acquire_lease(self, node_id: str, lease_ms: int, reason: str,
                      seen_epoch: int = 0) -> int | None:
        """If no lease exists: take a new epoch (INCR, first raising the counter to
        `seen_epoch` if Redis lost it), set the lease with it and log leader_elected,
        atomically; return the epoch. Otherwise None (no epoch spent)."""

    # -- compare-and-set on the lease: timing-critical ------------------------------

    @abstractmethod
    def renew_lease(self, lease: Lease, lease_ms: int) -> bool:
        """Extend the lease to lease_ms from now only if it is exactly `lease`."""

    @abstractmethod
    def resign_lease(self, lease: Lease, reason: str) -> bool:
        """Delete the lease only if it is exactly `lease`; log leader_resigned."""

    # -- registry: compare on the node's incarnation --------------------------------

    @abstractmethod
    def register(self, info: NodeInfo, ttl_ms: int) -> int:
        """Take the node id's next incarnation, write the hash and membership, and log
        node_joined; return the incarnation."""

    @abstractmethod
    def heartbeat(self, info: NodeInfo, incarnation: int, ttl_ms: int) -> Heartbeat:
        """Refresh the hash, its TTL and the members score, unless a newer incarnation
        registered (an older or missing counter means Redis lost it: it is restored);
        a state change logs node_<state>."""

    @abstractmethod
    def deregister(self, node_id: str, incarnation: int, kind: str, reason: str) -> bool:
        """Remove the node (if still this incarnation) and log `kind` (node_gone...)."""

    # -- fenced leader actions: compare on the lease's epoch ------------------------

    @abstractmethod
    def declare_dead(self, lease: Lease, node_id: str, ttl_ms: int, reason: str) -> bool:
        """While `lease` is the lease and the node's heartbeat is older than ttl_ms:
        remove it from the members and log node_dead."""

    @abstractmethod
    def send_command(self, lease: Lease, command: NodeCommand) -> bool:
        """While `lease` is the lease (its epoch is the command's): queue the command for
        the node's incarnation it names."""

    # -- node inbox and events --------------------------------------------------------

    @abstractmethod
    def take_commands(self, node_id: str, incarnation: int, limit: int = 16) -> list[str]:
        """Pop up to `limit` commands queued for this incarnation (wire form), oldest first."""

    @abstractmethod
    def latest_events(self, count: int) -> list[Event]:
        """The newest `count` events, oldest first."""

    @abstractmethod
    def emit(self, event: Event) -> None:
        """Append one event to the capped stream."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
