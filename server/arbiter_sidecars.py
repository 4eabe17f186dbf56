"""The master's side of its sidecars (the cluster agent): facts out, commands in.

A mixin of Arbiter. The node's facts (hello, state, events) are broadcast as
small JSON messages; commands from a sidecar (ttin, ttou, set_workers, reload,
upgrade) are executed by the loop and answered with a result.
"""

from __future__ import annotations

from polycorn.server.arbiter_state import LEAVING_STATES
from polycorn.server.messages import Command, Hello, MasterEvent, Received, Result, State
from polycorn.server.sidecar import SidecarProcess


class SidecarMixin:

    def _hello(self) -> Hello:
        return Hello(
            pid=self.pid,
            bind=tuple(str(lst) for lst in self.listeners),
            workers=int(self.cfg.workers),
            max_workers=self.max_workers(),
            proc_name=getattr(self.cfg, "proc_name", None),
            release=getattr(self.cfg, "release", None),
        )

    def max_workers(self) -> int:
        return int(self.cfg.max_workers_resolved)

    def broadcast_state(self, state: str | None = None, reason: str = "") -> None:
        if state is not None and self.state in LEAVING_STATES:
            state = "stopping"  # an undrain (or a late readiness) cannot bring it back
        elif state == "ready" and self.drained:
            state = "draining"  # a drained node stays out of rotation until undrained
        if state is not None:
            self.public_state = state
        ready = sum(1 for r in self.live() if r.ready_seen)
        self.sidecars.broadcast(State(
            state=self.public_state,
            workers=ready, workers_target=self.num_workers,
            workers_configured=int(self.cfg.workers), max_workers=self.max_workers(),
            pid=self.pid, reason=reason))

    def broadcast_event(self, event: str, reason: str) -> None:
        self.sidecars.broadcast(MasterEvent(event, reason))

    def handle_sidecar_message(self, proc: SidecarProcess, received: Received) -> None:
        msg = received.message
        if not isinstance(msg, Command):
            return
        cmd, cid, step = msg.cmd, msg.id, 1 if msg.n is None else msg.n
        ok, reason = True, ""
        if cmd == "ttin":
            self.set_num_workers(min(self.max_workers(), self.num_workers + step))
        elif cmd == "ttou":
            self.set_num_workers(self.num_workers - step)
        elif cmd == "set_workers":
            n = int(self.cfg.workers if msg.n is None else msg.n)
            if not 0 <= n <= self.max_workers():
                ok, reason = False, f"{n} workers is outside 0..{self.max_workers()}"
            else:
                self.set_num_workers(n)
        elif cmd in ("drain", "undrain"):
            self.set_drained(cmd == "drain")
        elif cmd == "reload":
            self.start_reload("sidecar")
        elif cmd == "upgrade":
            reason = self.upgrade_refusal()
            if reason:
                ok = False  # say so at once: a rollout then fails fast, not at its timeout
            else:
                self.start_upgrade()
        else:
            ok, reason = False, f"unknown command {cmd!r}"
        self.sidecars.reply(proc, Result(cid, ok, reason), received.version)

    def set_drained(self, drained: bool) -> None:
        """polycorn-ctl drain/undrain: keep serving, but answer the health path with 503."""
        if self.group is not None:
            self.group.mark_drained(drained)  # the other masters of the node follow
        self.follow_drain(drained)

    def follow_drain(self, drained: bool) -> None:
        # A master that left the rotation to stop keeps answering 503, drained or not.
        self.slots.set_draining(drained or self.left_rotation)
        self.drained = drained
        self.broadcast_state("draining" if drained else "ready")
