"""The master's vocabulary: its states, the halt it can decide, and what it knows of a worker."""

from __future__ import annotations

import enum
import os
import signal
from dataclasses import dataclass
from typing import Any

from polycorn.server.workers.base import Worker


class HaltServer(Exception):
    def __init__(self, reason: str, exit_status: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


class MasterState(enum.Enum):
    BOOTING = "booting"
    READY = "ready"
    RELOADING = "reloading"  # HUP: a new generation boots beside the serving one
    UPGRADING = "upgrading"  # USR2: a new master boots beside us
    # TERM: out of rotation for --deregister-delay (health path 503, registry "stopping")
    # while still serving and accepting, so balancers stop sending before the drain.
    DEREGISTERING = "deregistering"
    DRAINING = "draining"  # graceful stop: workers finish what they hold
    STOPPING = "stopping"  # quick stop
    STOPPED = "stopped"


# States of a master on its way out: the node is "stopping" for the cluster.
LEAVING_STATES = frozenset({MasterState.DEREGISTERING, MasterState.DRAINING,
                            MasterState.STOPPING})


@dataclass
class WorkerRecord:
    pid: int
    worker: Worker
    generation: int
    slot: int
    started: float
    abort_sent: float = 0.0
    term_sent: float = 0.0
    ready_seen: bool = False


def worker_class(cfg: Any) -> type[Worker]:
    name = getattr(cfg, "worker_class_resolved", None) or cfg.worker_class
    if name in ("thread", "gthread"):
        from polycorn.server.workers.thread import ThreadWorker
        return ThreadWorker
    if name == "event":
        from polycorn.server.workers.event import EventWorker
        return EventWorker
    from polycorn.server.workers.sync import SyncWorker
    if name == "sync" and int(getattr(cfg, "threads", 1) or 1) > 1:
        from polycorn.server.workers.thread import ThreadWorker
        return ThreadWorker
    return SyncWorker


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by {signal.Signals(sig).name}"
    return f"exit status {os.WEXITSTATUS(status)}"
