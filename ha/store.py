"""The store interface the agent and polycorn-ctl program against, grouped by guarantee.

Two implementations: redis_store.RedisStore (Lua scripts, the real thing) and
memory_store.MemoryStore (a dict and a fake clock, so the election and the agent's
decisions are tested without Redis). Every method is one atomic step on the store;
a failure to reach the store raises StoreUnavailable and nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum

from polycorn.ha.cluster_state import ClusterState, Grant
from polycorn.ha.commands import NodeCommand
from polycorn.ha.events import Event
from polycorn.ha.registry import Departure, NodeInfo, NodeRecord
from polycorn.ha.rollout import NodeRollout, RolloutRecord
from polycorn.ha.snapshot import ElectionSnapshot, Lease


class StoreUnavailable(Exception):
    """The store could not be reached (or timed out) within the call bound."""


class Heartbeat(Enum):
    REFRESHED = "refreshed"
    REJOINED = "rejoined"  # the hash had expired or was removed: it was re-created
    SUPERSEDED = "superseded"  # a newer incarnation of this node id has registered
    DECLARED_DEAD = "declared_dead"  # the leader declared this node dead: register anew


class IssueResult(Enum):
    """What ISSUE_UPGRADE did (lua/duties.py)."""

    ISSUED = "issued"  # a pending node took an upgrade slot; its command is queued
    REISSUED = "reissued"  # an upgrading node issued under an older epoch got it again
    NOT_LEADER = "not_leader"
    NOT_RUNNING = "not_running"  # no such rollout, or it is no longer running
    NO_SLOT = "no_slot"  # max_unavailable nodes are upgrading already
    NOT_PENDING = "not_pending"


class FinishResult(Enum):
    """The rollout's state after FINISH_UPGRADE, or why nothing was written."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    NOT_LEADER = "not_leader"
    NOT_RUNNING = "not_running"
    NOT_UPGRADING = "not_upgrading"


class ClusterStore(ABC):
    # -- reads: one consistent view per call ----------------------------------------

    @abstractmethod
    def snapshot(self, members: bool = True) -> ElectionSnapshot:
        """Lease, epoch counter, members and server time, read atomically. With
        members=False the members are left out (an empty tuple): an agent's cycle
        needs only the lease and the epoch, and every agent reading every member
        about three times a second made the cluster's reads grow with N squared."""

    @abstractmethod
    def nodes(self, ttl_ms: int) -> tuple[ElectionSnapshot, list[NodeRecord]]:
        """The snapshot plus every member's registration (for polycorn-ctl)."""

    @abstractmethod
    def cluster_state(self, ttl_ms: int) -> ClusterState:
        """The snapshot, every member's registration and the duties' records (roster,
        dead, lost, grants, drain requests, rollout) and Redis' run id, for the leader."""

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
    def deregister(self, node_id: str, incarnation: int, kind: str, reason: str,
                   departure: Departure = Departure.LEFT) -> bool:
        """Remove the node (if still this incarnation) and log `kind` (node_gone...).
        LEFT also takes it off the roster (no capacity owed); LOST records it for the
        leader to declare dead; ABORTED does neither."""

    # -- fenced leader actions: compare on the lease's epoch ------------------------

    @abstractmethod
    def declare_dead(self, lease: Lease, node_id: str, ttl_ms: int, reason: str) -> bool:
        """While `lease` is the lease, the node's hash has expired and it is either lost
        or a member whose heartbeat is older than ttl_ms: remove it from the members,
        record its death sentence (until it registers again), drop its grant and log
        node_dead."""

    @abstractmethod
    def grant_workers(self, lease: Lease, node_id: str, grant: Grant | None,
                      command: NodeCommand | None, event_kind: str, reason: str) -> bool:
        """While `lease` is the lease: record (or, with None, remove) the node's grant,
        queue the set_workers command if any and log `event_kind` if not empty."""

    @abstractmethod
    def issue_upgrade(self, lease: Lease, rollout_id: str, entry: NodeRollout,
                      command: NodeCommand, reason: str) -> IssueResult:
        """While `lease` is the lease and the rollout runs: move a pending node to
        upgrading if a slot is free (or re-issue an upgrading node's command from an
        older epoch), write `entry` and queue `command`, atomically."""

    @abstractmethod
    def finish_upgrade(self, lease: Lease, rollout_id: str, entry: NodeRollout,
                       reason: str) -> FinishResult:
        """While `lease` is the lease and the rollout runs: record the node done or
        failed (entry.step), free its slot; a failure halts the rollout, the last node
        done completes it."""

    # -- operator requests (polycorn-ctl): desired state the leader carries out --------

    @abstractmethod
    def create_rollout(self, rollout: RolloutRecord, reason: str) -> tuple[bool, str]:
        """Store a new rollout unless one is running: (True, its id) or (False, the id
        of the running one)."""

    @abstractmethod
    def abort_rollout(self, reason: str) -> str | None:
        """Mark the running rollout aborted (no further node starts); its id, or None."""

    @abstractmethod
    def set_drained(self, node_id: str, drained: bool, reason: str) -> bool:
        """Add the node to (or remove it from) the drain requests and log the request;
        False when nothing changed."""

    @abstractmethod
    def forget_node(self, node_id: str, reason: str) -> bool:
        """Take a node off the roster and every duty record (it will not come back, so
        the survivors' extra workers go back); False when nothing was known of it."""

    @abstractmethod
    def send_command(self, lease: Lease, command: NodeCommand) -> bool:
        """While `lease` is the lease (its epoch is the command's): queue the command for
        the node's incarnation it names."""

    # -- node inbox and events --------------------------------------------------------

    @abstractmethod
    def take_commands(self, node_id: str, incarnation: int, limit: int = 16) -> list[str]:
        """Pop up to `limit` commands queued for this incarnation (wire form), oldest first."""

    def cycle_read(self, node_id: str, incarnation: int, limit: int = 16
                   ) -> tuple[ElectionSnapshot, list[str]]:
        """An agent's read of every cycle: the snapshot without members and the
        commands taken for this incarnation (take_commands). RedisStore sends both in
        one round trip: every node makes it about three times a second, so it is most
        of what a cluster's size costs Redis."""
        return self.snapshot(members=False), self.take_commands(node_id, incarnation, limit)

    @abstractmethod
    def latest_events(self, count: int) -> list[Event]:
        """The newest `count` events, oldest first."""

    @abstractmethod
    def emit(self, event: Event) -> None:
        """Append one event to the capped stream."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
