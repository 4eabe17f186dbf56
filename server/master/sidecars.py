"""The master's side of its sidecars (the cluster agent): facts out, commands in.

`Announcer` broadcasts the node's facts (hello, state, events) as small JSON
messages through the SidecarSupervisor (server/sidecar.py starts, watches and
restarts the processes); `SidecarCommands` executes a sidecar's commands
(ttin, ttou, set_workers, drain, undrain, reload, upgrade) through the parts
given to it and answers each with a result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from polycorn.server import instrument
from polycorn.server.master.state import CurrentConfig, Lifecycle, Rotation
from polycorn.server.messages import Command, Hello, MasterEvent, Received, Result, State
from polycorn.server.sidecar import SidecarProcess, SidecarSupervisor

if TYPE_CHECKING:  # the parts commanded; they import this module themselves
    from polycorn.server.master.pool import WorkerPool
    from polycorn.server.master.reload import Reload
    from polycorn.server.master.successor import Succession


class Announcer:
    """What the sidecars are told: hello once, the node's state, events."""

    def __init__(self, supervisor: SidecarSupervisor, lifecycle: Lifecycle,
                 config: CurrentConfig, rotation: Rotation, *, pid: int,
                 counts: Callable[[], tuple[int, int]]) -> None:
        self.supervisor = supervisor
        self.lifecycle = lifecycle
        self.config = config
        self.rotation = rotation
        self.pid = pid
        self.counts = counts  # (ready workers, workers the master keeps)
        self.public_state = "booting"  # what sidecars and the cluster are told

    def max_workers(self) -> int:
        return int(self.config.cfg.max_workers_resolved)

    def hello(self, listeners: list[Any]) -> None:
        cfg = self.config.cfg
        self.supervisor.broadcast(Hello(
            pid=self.pid,
            bind=tuple(str(lst) for lst in listeners),
            workers=int(cfg.workers),
            max_workers=self.max_workers(),
            proc_name=getattr(cfg, "proc_name", None),
            release=getattr(cfg, "release", None),
        ))

    def state(self, state: str | None = None, reason: str = "") -> None:
        if state is not None and self.lifecycle.leaving:
            state = "stopping"  # an undrain (or a late readiness) cannot bring it back
        elif state == "ready" and self.rotation.drained:
            state = "draining"  # a drained node stays out of rotation until undrained
        if state is not None:
            self.public_state = state
        ready, target = self.counts()
        self.supervisor.broadcast(State(
            state=self.public_state,
            workers=ready, workers_target=target,
            workers_configured=int(self.config.cfg.workers),
            max_workers=self.max_workers(), pid=self.pid, reason=reason))

    def event(self, event: str, reason: str) -> None:
        instrument.current().event(event, reason)
        self.supervisor.broadcast(MasterEvent(event, reason))


class SidecarCommands:
    """Reads the sidecars' channels and runs their commands through the parts."""

    def __init__(self, supervisor: SidecarSupervisor, announcer: Announcer, pool: WorkerPool,
                 reload: Reload, succession: Succession, *,
                 set_drained: Callable[[bool], None]) -> None:
        self.supervisor = supervisor
        self.announcer = announcer
        self.pool = pool
        self.reload = reload
        self.succession = succession
        self.set_drained = set_drained  # polycorn-ctl drain/undrain, node-wide

    def readers(self) -> dict[int, Callable[[], None]]:
        """fd -> what to do when it is readable, for the loop's select()."""
        return {fd: (lambda proc=proc: self.read(proc))
                for fd, proc in self.supervisor.channels().items()}

    def read(self, proc: SidecarProcess) -> None:
        for received in self.supervisor.read(proc):
            self.handle(proc, received)

    def handle(self, proc: SidecarProcess, received: Received) -> None:
        msg = received.message
        if not isinstance(msg, Command):
            return
        ok, reason = self.run(msg.cmd, msg.n)
        self.supervisor.reply(proc, Result(msg.id, ok, reason), received.version)

    def run(self, cmd: str, n: int | None = None) -> tuple[bool, str]:
        """(ok, reason) of one command; n is its count, when it has one."""
        pool, most = self.pool, self.announcer.max_workers()
        step = 1 if n is None else n
        if cmd == "ttin":
            pool.set_num_workers(min(most, pool.num_workers + step))
        elif cmd == "ttou":
            pool.set_num_workers(pool.num_workers - step)
        elif cmd == "set_workers":
            n = int(self.announcer.config.cfg.workers if n is None else n)
            if not 0 <= n <= most:
                return False, f"{n} workers is outside 0..{most}"
            pool.set_num_workers(n)
        elif cmd in ("drain", "undrain"):
            self.set_drained(cmd == "drain")
        elif cmd == "reload":
            self.reload.start("sidecar")
        elif cmd == "upgrade":
            refusal = self.succession.refusal()
            if refusal:  # say so at once: a rollout then fails fast, not at its timeout
                return False, refusal
            self.succession.start()
        else:
            return False, f"unknown command {cmd!r}"
        return True, ""
