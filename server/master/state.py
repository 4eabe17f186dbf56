"""The master's vocabulary and the little state its parts share by reference.

States, the halt a part can decide, what the master knows of a worker, and three
small holders that each part receives at construction instead of reading a
shared `self`: the lifecycle state, the configuration in force (a HUP swaps it)
and the node's place in the balancers' rotation (drain, deregistration).
"""

from __future__ import annotations

import enum
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from polycorn.server.liveness import SlotTable
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


class Lifecycle:
    """Where the master is (MasterState), and what waits for it to be ready."""

    def __init__(self) -> None:
        self.state = MasterState.BOOTING
        self.ever_ready = False
        self.deferred: list[Callable[[], None]] = []  # HUP/USR2 received while booting

    @property
    def leaving(self) -> bool:
        return self.state in LEAVING_STATES

    def defer(self, action: Callable[[], None]) -> None:
        self.deferred.append(action)

    def run_deferred(self) -> None:
        while self.deferred:
            self.deferred.pop(0)()


class CurrentConfig:
    """The configuration in force; a HUP swaps it and keeps the previous one until
    the new generation is ready (a failed reload restores it)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.previous: Any = None

    def swap(self, new: Any) -> None:
        self.previous, self.cfg = self.cfg, new

    def settle(self) -> None:
        self.previous = None

    def restore(self) -> bool:
        """Back to the previous configuration; True when there was one."""
        if self.previous is None:
            return False
        self.cfg, self.previous = self.previous, None
        return True


class Rotation:
    """Whether balancers should send here: drained (polycorn-ctl drain) or gone
    through the deregistration window of a stop; the workers' health path answers
    503 through the shared slot table's flag."""

    def __init__(self, slots: SlotTable) -> None:
        self.slots = slots
        self.drained = False
        self.left = False  # went through the deregistration window: stays 503

    def follow(self, drained: bool) -> None:
        # A master that left the rotation to stop keeps answering 503, drained or not.
        self.slots.set_draining(drained or self.left)
        self.drained = drained

    def leave(self) -> None:
        self.left = True
        self.slots.set_draining(True)


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
    if name == "asgi":
        from polycorn.server.workers.asgi import ASGIWorker
        return ASGIWorker
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
