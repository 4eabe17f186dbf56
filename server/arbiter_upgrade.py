"""USR2: the next master, health-gated, promoted or rolled back (see upgrade.py).

A mixin of Arbiter: the old master's side starts and watches an Upgrade; the
new master's side reports ready to the master it replaces and takes over the
pid file and systemd's MAINPID when promoted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from polycorn.server import identity, pidfile, systemd
from polycorn.server.arbiter_state import MasterState
from polycorn.server.messages import FOR_NEW_MASTER, Promote, receive
from polycorn.server.sidecar import ChannelClosed
from polycorn.server.upgrade import Outcome, Upgrade, write_status

log = logging.getLogger("polycorn.error")


class UpgradeMixin:

    def upgrade_refusal(self) -> str:
        """Why an upgrade asked for now would be ignored ("" when it would start)."""
        if self.inherited is not None:
            return "this master is itself a new generation, not yet promoted"
        if self.state is not MasterState.READY:
            return f"master is {self.state.value}"
        return ""

    def start_upgrade(self) -> None:
        if self.state is MasterState.BOOTING:
            self.deferred.append(self.handle_usr2)
            return
        if self.state is not MasterState.READY or self.inherited is not None:
            log.warning("upgrade ignored: master is %s%s", self.state.value,
                        " and not yet promoted" if self.inherited is not None else "")
            return
        self.upgrade_attempt += 1
        timeout = float(getattr(self.cfg, "upgrade_timeout", 60) or 60)
        extra = self.group.upgrade_fds() if self.group is not None else {}
        self.state = MasterState.UPGRADING
        self.upgrade = Upgrade(self.upgrade_attempt, self.listeners, extra, self.argv, self.cwd,
                               timeout, drained=self.drained)
        log.info("upgrade started: new master pid %s (%s)", self.upgrade.new_pid,
                 " ".join(self.argv))
        self.cfg.pre_exec(self)
        self.record_status("upgrading")
        self.broadcast_state("upgrading")
        self.broadcast_event("upgrade_started", f"new master pid {self.upgrade.new_pid}")

    def advance_upgrade(self) -> None:
        if self.upgrade is None:
            return
        outcome = self.upgrade.poll()
        if outcome is Outcome.UPGRADING:
            return
        upgrade, self.upgrade = self.upgrade, None
        if outcome is Outcome.PROMOTED:
            self.successor = upgrade.new_pid
            log.info("upgrade promoted: new master pid %s; draining the old workers",
                     upgrade.new_pid)
            # The new master records itself in the status file; writing here would race it.
            self.broadcast_event("upgrade_promoted", f"new master pid {upgrade.new_pid}")
            self.state = MasterState.READY  # so that begin_stop drains from a clean state
            self.begin_stop(graceful=True, announce=False)
        else:
            log.error("upgrade rolled back: %s", upgrade.reason)
            self.state = MasterState.READY
            self.record_status("rolled_back", reason=upgrade.reason, new_pid=upgrade.new_pid)
            self.broadcast_state("ready")
            self.broadcast_event("upgrade_rolled_back", upgrade.reason)

    def read_old_master(self) -> None:
        assert self.inherited is not None
        try:
            messages = self.inherited.channel.receive_ready()
        except ChannelClosed:
            if self.state is MasterState.READY:
                self.promoted("the old master is gone")
            else:
                # Rolled back (we are about to be killed) or the old master died
                # while we boot: keep booting, and take over when ready.
                self.inherited.channel.close()
                self.inherited = None
            return
        for received in receive(messages, FOR_NEW_MASTER, "new master", log,
                                f"ignored it (sent by the old master {self.inherited.old_pid}); "
                                "taking over when the old master exits"):
            if isinstance(received.message, Promote):
                self.promoted("promoted by the old master")
                return

    def promoted(self, why: str) -> None:
        assert self.inherited is not None
        old = self.inherited.old_pid
        self.inherited.channel.close()
        self.inherited = None
        log.info("this master (pid %s) now serves: %s (old master %s)", self.pid, why, old)
        if self.cfg.pidfile and (self.group is None or self.group.owner is not None
                                 or not self.cfg.handoff):
            pidfile.write(self.cfg.pidfile, self.pid)
        systemd.notify(f"MAINPID={self.pid}\nREADY=1")
        if self.group is not None:
            self.group.join()  # from now on it counts among the masters serving the path
        self.record_status("running", upgraded_from=old)

    def record_status(self, state: str, **extra: Any) -> None:
        # The stamp (pid, start time, boot id) lets `polycorn --upgrade` tell this master
        # from a process that got its pid after it died.
        write_status(self.status_file, {**identity.stamp(self.pid), "index": self.index,
                                        "state": state, "attempt": self.upgrade_attempt,
                                        "time": time.time(), **extra})
