"""What a node publishes about itself, and how a reader judges it alive.

Each node's agent keeps one Redis hash (fields below) whose TTL is the node TTL
and which every heartbeat refreshes; a members sorted set indexes the nodes by
their last heartbeat (server ms). A node is dead once its heartbeat is older than
the TTL, whether or not the leader has declared it yet.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, fields, replace
from enum import Enum

from polycorn.ha.snapshot import ElectionSnapshot


class Departure(Enum):
    """How a node's agent left the registry, judged from its master's last state."""

    LEFT = "left"  # the master was stopping: the operator removed the node on purpose
    LOST = "lost"  # the master vanished while serving: the leader declares the node dead
    ABORTED = "aborted"  # the master died while booting (e.g. an upgrade rolled back)


class NodeState(Enum):
    BOOTING = "booting"
    READY = "ready"
    DRAINING = "draining"
    UPGRADING = "upgrading"
    STOPPING = "stopping"


# States in which a node may lead. "upgrading" keeps its leadership: the node still
# serves while its new generation boots, and handing over would churn the cluster.
LEADER_STATES = frozenset({NodeState.READY, NodeState.UPGRADING})


@dataclass(frozen=True)
class NodeInfo:
    """The registration an agent writes, from its configuration and its master's messages."""

    node_id: str
    host: str
    address: str  # advertised HOST:PORT (or the first bind)
    pid: int  # the master's pid
    release: str
    state: NodeState = NodeState.BOOTING
    workers: int = 0
    workers_configured: int = 0
    max_workers: int = 0
    workers_target: int = 0  # what the master is asked to run (configured, or set_workers)
    started: float = 0.0  # Unix time the agent registered (for display only)
    # HOST:PORT of the node's Prometheus /metrics (--metrics-bind), "" when off; the
    # dashboard reads requests/s from it (docs/dashboard.md)
    metrics_address: str = ""

    def to_hash(self) -> dict[str, str]:
        out = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        out["state"] = self.state.value
        return out

    def evolve(self, **changes) -> NodeInfo:
        return replace(self, **changes)


@dataclass(frozen=True)
class NodeRecord:
    """One node as a reader sees it: its registration plus liveness."""

    info: NodeInfo
    incarnation: int
    heartbeat_ms: int  # server time of the last heartbeat
    alive: bool

    def heartbeat_age(self, now_ms: int) -> float:
        return max(0.0, (now_ms - self.heartbeat_ms) / 1000)

    def as_json(self, now_ms: int) -> dict:
        i = self.info
        return {"node_id": i.node_id, "state": i.state.value if self.alive else "dead",
                "release": i.release, "pid": i.pid, "host": i.host, "address": i.address,
                "workers": i.workers, "workers_configured": i.workers_configured,
                "max_workers": i.max_workers, "workers_target": i.workers_target,
                "incarnation": self.incarnation,
                "started": i.started, "heartbeat_age": round(self.heartbeat_age(now_ms), 3),
                "alive": self.alive}


def _int(value: str | None) -> int:
    try:
        return int(float(value or 0))
    except ValueError:
        return 0


def record_from_hash(node_id: str, data: dict[str, str], heartbeat_ms: int,
                     now_ms: int, ttl_ms: int) -> NodeRecord:
    """Build a record from a node hash (empty when it expired) and its members score."""
    try:
        state = NodeState(data.get("state", "booting"))
    except ValueError:
        state = NodeState.BOOTING
    info = NodeInfo(
        node_id=node_id, host=data.get("host", ""), address=data.get("address", ""),
        pid=_int(data.get("pid")), release=data.get("release", ""), state=state,
        workers=_int(data.get("workers")), workers_configured=_int(data.get("workers_configured")),
        max_workers=_int(data.get("max_workers")),
        workers_target=_int(data.get("workers_target") or data.get("workers_configured")),
        started=float(data.get("started") or 0),
        metrics_address=data.get("metrics_address", ""))
    alive = bool(data) and now_ms - heartbeat_ms < ttl_ms
    return NodeRecord(info, _int(data.get("incarnation")), heartbeat_ms, alive)


def lapsed_members(snap: ElectionSnapshot, ttl_ms: int, me: str) -> list[str]:
    """Members (other than me) whose last heartbeat is older than the node TTL."""
    return [m.node_id for m in snap.members
            if m.node_id != me and snap.now_ms - m.heartbeat_ms >= ttl_ms]


def default_node_id() -> str:
    """Hostname plus a short random suffix: unique even for several masters on one host."""
    host = socket.gethostname().split(".")[0] or "node"
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in host)[:100]
    return f"{safe}-{uuid.uuid4().hex[:6]}"


def default_release(directory: str | None = None) -> str:
    """The basename of the resolved working directory: under the releases/<id> layout
    with a `current` symlink this is the release id, and it is re-read on every
    re-exec, so an upgrade shows its new release."""
    return os.path.basename(os.path.realpath(directory or os.getcwd())) or "/"
