"""Stopping: TERM takes the node out of rotation first, then drains; INT/QUIT stop at once.

A graceful stop of a node that balancers may be sending to starts with the
deregistration window (MasterState.DEREGISTERING, for --deregister-delay
seconds): every worker answers the health path with 503 and the sidecars (the
cluster agent) are told "stopping" at once, while the workers keep accepting
and serving whatever still arrives. Health checks and the registry-driven
balancer sync take the node out before it stops accepting; only then does it
drain (DRAINING: workers finish what they hold within --graceful-timeout). The
old master of a promoted upgrade drains without the window: its successor
serves the same listening sockets. A halt kills everything at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any

from polycorn.server.master.peers import GroupStop
from polycorn.server.master.pool import WorkerPool
from polycorn.server.master.sidecars import Announcer
from polycorn.server.master.state import CurrentConfig, Lifecycle, MasterState, Rotation
from polycorn.server.master.successor import Succession
from polycorn.server.master.system import System
from polycorn.server.sidecar import SidecarSupervisor

log = logging.getLogger("polycorn.error")

# States in which balancers may be sending to this master's workers.
IN_ROTATION = frozenset({MasterState.READY, MasterState.RELOADING, MasterState.UPGRADING})


class Stop:
    """The way out: deregistration window, drain or quick stop, then the sidecars."""

    def __init__(self, system: System, lifecycle: Lifecycle, config: CurrentConfig,
                 pool: WorkerPool, rotation: Rotation, announcer: Announcer,
                 succession: Succession, sidecars: SidecarSupervisor, *, pid: int) -> None:
        self.system = system
        self.lifecycle = lifecycle
        self.config = config
        self.pool = pool
        self.rotation = rotation
        self.announcer = announcer
        self.succession = succession  # a stop abandons an upgrade under way
        self.sidecars = sidecars
        self.pid = pid
        self.group: Any = None  # MasterGroup: peers follow our stop, or keep serving
        self.stop_deadline = 0.0
        self.deregister_deadline = 0.0  # end of the DEREGISTERING window

    def attach(self, group: Any) -> None:
        self.group = group

    def stop_gracefully(self, why: str, announce: bool = True) -> None:
        """TERM, or a peer master's TERM: the deregistration window first, when it applies.

        A second TERM during the window skips the rest of it: an operator who asks
        twice wants the stop now, and the drain still loses nothing.
        """
        state = self.lifecycle.state
        if state is MasterState.DEREGISTERING:
            log.info("master %s: %s during the deregistration window: draining now",
                     self.pid, why)
            self.begin_stop(graceful=True, announce=False)
            return
        if state in (MasterState.DRAINING, MasterState.STOPPING):
            return
        if self.group is not None:
            self.group.resign()  # before the probe: we no longer count as serving
        delay, why_not = self.deregistration_window()
        if delay <= 0:
            if why_not:
                log.info("master %s: %s: draining without a deregistration window (%s)",
                         self.pid, why, why_not)
            self.begin_stop(graceful=True, announce=announce)
            return
        self.begin_deregister(delay, why, announce)

    def deregistration_window(self) -> tuple[float, str]:
        """Seconds the stop starting now spends out of rotation, or 0 and why not
        ("" when the window is off by configuration)."""
        cfg = self.config.cfg
        delay = float(getattr(cfg, "deregister_delay", 0) or 0)
        if delay <= 0:
            return 0.0, ""
        if not self.in_rotation():
            return 0.0, (f"master is {self.lifecycle.state.value} and none of its workers "
                         "serves yet")
        if not (getattr(cfg, "health_check", None) or self.sidecars.procs):
            # Nobody could learn of the window: no health path to probe, no registry.
            return 0.0, "no health path and no cluster agent to tell"
        if self.group is not None and self.group.count == 1 and self.group.others_serving():
            # One unit per master on a shared hand-off path: the node is not leaving, and
            # the other masters keep accepting on the very same listening sockets.
            return 0.0, f"another master still serves {self.group.path}"
        return delay, ""

    def in_rotation(self) -> bool:
        """Whether a balancer may be sending here: serving, or booting with a worker
        that already accepts (its health path answers 200 before the master is ready)."""
        if self.lifecycle.state in IN_ROTATION:
            return True
        return self.lifecycle.state is MasterState.BOOTING and self.pool.any_slot_ready()

    def begin_deregister(self, delay: float, why: str, announce: bool) -> None:
        self.succession.abandon("the old master was asked to stop")
        if announce and self.group is not None:
            self.group.announce_stop(GroupStop.DEREGISTER)
        self.lifecycle.state = MasterState.DEREGISTERING
        self.deregister_deadline = self.system.monotonic() + delay
        self.rotation.leave()
        self.announcer.state("stopping", reason=why)
        log.info("master %s: %s: out of rotation for %gs before draining (health path %s "
                 "answers 503, still serving)", self.pid, why, delay,
                 getattr(self.config.cfg, "health_check", None) or "unset")

    def seconds_to_deregistered(self) -> float:
        return max(0.0, self.deregister_deadline - self.system.monotonic())

    def advance_deregister(self) -> None:
        """One turn of the loop in the window: keep serving, then drain on time."""
        if self.system.monotonic() >= self.deregister_deadline:
            log.info("master %s: deregistration delay over: draining", self.pid)
            self.begin_stop(graceful=True, announce=False)
            return
        self.pool.enforce_timeouts()
        self.pool.manage()
        if self.pool.notice_readiness():
            self.announcer.state()

    def begin_stop(self, graceful: bool, announce: bool = True,
                   handing_over: bool = False) -> None:
        """handing_over: the promoted successor serves the node's sockets already."""
        state = self.lifecycle.state
        if state is MasterState.STOPPING or (graceful and state is MasterState.DRAINING):
            return
        self.succession.abandon("the old master was asked to stop")
        if self.group is not None:
            self.group.resign()
            if announce:  # peers stop too, rather than restart us
                self.group.announce_stop(GroupStop.DEREGISTER if graceful else GroupStop.DRAIN)
        self.lifecycle.state = MasterState.DRAINING if graceful else MasterState.STOPPING
        if not handing_over:
            self.announcer.state("stopping")
        # Handing over, the node is not leaving: it stays "upgrading" until the successor's
        # agent registers. "stopping" took it out of the front in that gap, its last
        # server in rotation at that moment (chaos --random 20: 64 HTTP 503 in 0.2 s).
        self.stop_deadline = self.system.monotonic() + float(self.config.cfg.graceful_timeout)
        self.pool.stop_all(signal.SIGTERM if graceful else signal.SIGQUIT)

    def advance_stop(self) -> None:
        if self.pool.workers and self.system.monotonic() > self.stop_deadline:
            log.warning("graceful timeout: killing %s workers", len(self.pool.workers))
            self.pool.kill_all(signal.SIGKILL)
            self.stop_deadline = self.system.monotonic() + 5
        if not self.pool.workers:
            self.stop_sidecars()
            self.lifecycle.state = MasterState.STOPPED

    def stop_sidecars(self) -> None:
        self.sidecars.stop(signal.SIGTERM)
        deadline = self.system.monotonic() + 3
        while self.sidecars.pids() and self.system.monotonic() < deadline:
            for pid in list(self.sidecars.pids()):
                with contextlib.suppress(ChildProcessError):
                    done, _ = self.system.waitpid(pid, os.WNOHANG)
                    if done:
                        for proc in self.sidecars.procs:
                            if proc.pid == done:
                                proc.pid = 0
            self.system.sleep(0.02)
        self.sidecars.stop(signal.SIGKILL)

    def kill_everything(self) -> None:
        """A halt: every child dies now, and is reaped for up to 5 s."""
        self.pool.kill_all(signal.SIGKILL)
        self.sidecars.stop(signal.SIGKILL)
        deadline = self.system.monotonic() + 5
        while self.system.monotonic() < deadline:
            try:
                pid, _ = self.system.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                self.system.sleep(0.01)
