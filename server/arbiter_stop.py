"""Stopping: TERM takes the node out of rotation first, then drains; INT/QUIT stop at once.

A mixin of Arbiter. A graceful stop of a node that balancers may be sending to
starts with the deregistration window (MasterState.DEREGISTERING, for
--deregister-delay seconds): every worker answers the health path with 503 and
the sidecars (the cluster agent) are told "stopping" at once, while the workers
keep accepting and serving whatever still arrives. Health checks and the
registry-driven balancer sync take the node out before it stops accepting; only
then does it drain (DRAINING: workers finish what they hold within
--graceful-timeout). The old master of a promoted upgrade drains without the
window: its successor serves the same listening sockets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time

from polycorn.server.arbiter_state import MasterState
from polycorn.server.liveness import WorkerState
from polycorn.server.masters import GroupStop
from polycorn.server.upgrade import Outcome

log = logging.getLogger("polycorn.error")

# States in which balancers may be sending to this master's workers.
IN_ROTATION = frozenset({MasterState.READY, MasterState.RELOADING, MasterState.UPGRADING})


class StopMixin:

    def stop_gracefully(self, why: str, announce: bool = True) -> None:
        """TERM, or a peer master's TERM: the deregistration window first, when it applies.

        A second TERM during the window skips the rest of it: an operator who asks
        twice wants the stop now, and the drain still loses nothing.
        """
        if self.state is MasterState.DEREGISTERING:
            log.info("master %s: %s during the deregistration window: draining now",
                     self.pid, why)
            self.begin_stop(graceful=True, announce=False)
            return
        if self.state in (MasterState.DRAINING, MasterState.STOPPING):
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
        delay = float(getattr(self.cfg, "deregister_delay", 0) or 0)
        if delay <= 0:
            return 0.0, ""
        if not self.in_rotation():
            return 0.0, f"master is {self.state.value} and none of its workers serves yet"
        if not (getattr(self.cfg, "health_check", None) or self.sidecars.procs):
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
        if self.state in IN_ROTATION:
            return True
        return self.state is MasterState.BOOTING and any(
            self.slots.read(rec.slot)[1] is WorkerState.READY for rec in self.workers.values())

    def begin_deregister(self, delay: float, why: str, announce: bool) -> None:
        self.abandon_upgrade("the old master was asked to stop")
        if announce and self.group is not None:
            self.group.announce_stop(GroupStop.DEREGISTER)
        self.state = MasterState.DEREGISTERING
        self.deregister_deadline = time.monotonic() + delay
        self.left_rotation = True
        self.slots.set_draining(True)
        self.broadcast_state("stopping", reason=why)
        log.info("master %s: %s: out of rotation for %gs before draining (health path %s "
                 "answers 503, still serving)", self.pid, why, delay,
                 getattr(self.cfg, "health_check", None) or "unset")

    def advance_deregister(self) -> None:
        """One turn of the loop in the window: keep serving, then drain on time."""
        if time.monotonic() >= self.deregister_deadline:
            log.info("master %s: deregistration delay over: draining", self.pid)
            self.begin_stop(graceful=True, announce=False)
            return
        self.enforce_timeouts()
        self.manage_workers()
        self.notice_readiness()

    def begin_stop(self, graceful: bool, announce: bool = True) -> None:
        if self.state is MasterState.STOPPING or (graceful and self.state is MasterState.DRAINING):
            return
        self.abandon_upgrade("the old master was asked to stop")
        if self.group is not None:
            self.group.resign()
            if announce:  # peers stop too, rather than restart us
                self.group.announce_stop(GroupStop.DEREGISTER if graceful else GroupStop.DRAIN)
        self.state = MasterState.DRAINING if graceful else MasterState.STOPPING
        self.broadcast_state("stopping")
        self.stop_deadline = time.monotonic() + float(self.cfg.graceful_timeout)
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        for rec in self.workers.values():
            rec.term_sent = rec.term_sent or time.monotonic()
        self.kill_workers(sig)

    def abandon_upgrade(self, reason: str) -> None:
        """A stop during a USR2 upgrade: kill the new generation and say so now.

        Left to the reaper, the rolled-back upgrade would put the stopping master
        back to READY, and it would respawn its workers instead of stopping.
        """
        if self.upgrade is None or self.upgrade.outcome is not Outcome.UPGRADING:
            return
        upgrade, self.upgrade = self.upgrade, None
        upgrade.fail(reason)
        log.error("upgrade rolled back: %s", reason)
        self.record_status("rolled_back", reason=reason, new_pid=upgrade.new_pid)
        self.broadcast_event("upgrade_rolled_back", reason)

    def advance_stop(self) -> None:
        if self.workers and time.monotonic() > self.stop_deadline:
            log.warning("graceful timeout: killing %s workers", len(self.workers))
            self.kill_workers(signal.SIGKILL)
            self.stop_deadline = time.monotonic() + 5
        if not self.workers:
            self.stop_sidecars()
            self.state = MasterState.STOPPED

    def stop_sidecars(self) -> None:
        self.sidecars.stop(signal.SIGTERM)
        deadline = time.monotonic() + 3
        while self.sidecars.pids() and time.monotonic() < deadline:
            for pid in list(self.sidecars.pids()):
                with contextlib.suppress(ChildProcessError):
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        for proc in self.sidecars.procs:
                            if proc.pid == done:
                                proc.pid = 0
            time.sleep(0.02)
        self.sidecars.stop(signal.SIGKILL)

    def kill_everything(self) -> None:
        self.kill_workers(signal.SIGKILL)
        self.sidecars.stop(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)

