"""`polycorn-ctl haproxy sync`: keep one HAProxy backend in step with the registry.

Each cycle reads HAProxy's slots (`show servers state`), takes the feed's latest
registry view, asks the pure reconciliation for commands and sends them, one per
connection. A cycle runs on every new view (an event wakes the feed at once) and at
least every `period`, so a restarted or reloaded HAProxy (its pid or uptime tells)
gets every slot back within a period. After a change the slots' state is saved to
the server-state-file, which HAProxy loads when it starts. One log line per change:
node, slot, old -> new state, reason.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from polycorn.ha.guard import RecentLosses
from polycorn.ha.haproxy.feed import RegistryFeed
from polycorn.ha.haproxy.hung import HungSlots
from polycorn.ha.haproxy.nodes import front_nodes
from polycorn.ha.haproxy.reconcile import Plan, Presence, Trust, reconcile
from polycorn.ha.haproxy.resolve import Resolver
from polycorn.ha.haproxy.runtime import RuntimeApi, RuntimeApiError
from polycorn.ha.haproxy.servers import StateFormatError, parse_info, parse_servers_state
from polycorn.ha.timing import Timing

log = logging.getLogger("polycorn.haproxy")

# Seconds between two full reconciliations with no event. Also how late a slot that
# HAProxy's checks marked down can be seen, and its sessions are shut only SHUT_AFTER
# after that: a hung host's requests wait for both (hung.py). One `show servers
# state` on HAProxy's socket per cycle.
PERIOD = 0.1


class Sync:
    def __init__(self, api: RuntimeApi, feed: RegistryFeed, backend: str, timing: Timing,
                 state_file: str | None = None, resolver: Resolver | None = None,
                 period: float = PERIOD, clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.feed = feed
        self.backend = backend
        self.timing = timing
        self.state_file = Path(state_file) if state_file else None
        self.resolver = resolver or Resolver()
        self.period = period
        self.clock = clock
        self.assignment: dict[str, str] = {}
        self.absent_since: dict[str, float] = {}
        self.taken_out = RecentLosses()  # lapsed nodes (or slots) believed gone lately
        self.haproxy: tuple[str, int] | None = None  # (pid, uptime) last seen
        self.haproxy_error = ""
        self.said: set[str] = set()  # warnings and holds logged, until they change
        self.state_saved = False
        self.state_error = False
        self.hung = HungSlots()

    def run(self, stop: threading.Event) -> None:
        log.info("sync for backend %s via %r: following the registry", self.backend, self.api)
        self.feed.start()
        try:
            while not stop.is_set():
                self.feed.wait(self.period)
                if not stop.is_set():
                    self.cycle()
        finally:
            self.feed.stop()

    def cycle(self) -> Plan | None:
        """One reconciliation; the plan carried out, or None when it could not run."""
        try:
            restarted = self._watch_haproxy()
            servers = parse_servers_state(self.api.show_servers_state(self.backend),
                                          self.backend)
        except (RuntimeApiError, StateFormatError) as exc:
            self._haproxy_failed(str(exc))
            return None
        self._shut_hung(servers)
        if not servers:
            self._notes({"no servers": (logging.ERROR, f"backend {self.backend!r} has no "
                                        f"servers: is this the config `polycorn-ctl "
                                        f"haproxy config` wrote?")})
            return None
        reading = self.feed.reading()
        if reading.view is None:
            self._notes({"no view": (logging.WARNING, f"no registry view yet "
                                     f"({reading.error or 'reading'}): changing nothing")})
            return None
        nodes, problems = front_nodes(reading.view, self.resolver.resolve)
        now = self.clock()
        still_counted = {n.node_id for n in nodes if n.presence is not Presence.DEAD}
        still_counted.update(f"slot:{s}" for s in self.absent_since)
        trust = Trust(int(self.timing.node_ttl * 1000), reading.stable_for,
                      reading.changed_ago, self.timing.recovery_grace,
                      self.taken_out.count(now, self.timing.node_ttl, still_counted))
        absent_ms = {s: int((now - t) * 1000) for s, t in self.absent_since.items()}
        plan = reconcile(self.backend, nodes, servers, self.assignment, trust, absent_ms)
        self._carry_out(plan)
        self.taken_out.note(plan.believed, now)
        self.assignment = dict(plan.assignment)
        self.absent_since = {s: self.absent_since.get(s, now) for s in plan.absent}
        notes = {f"address {n} {why}": (logging.WARNING, f"{n} left out of the backend: {why}")
                 for n, why in problems.items()}
        notes.update({w: (logging.WARNING, w) for w in plan.warnings})
        if plan.hold is not None:  # keyed by its cause: the reason's figures change
            notes[f"hold {plan.hold.cause.value}"] = (
                logging.WARNING, f"taking no lapsed node out: {plan.hold.reason}")
        self._notes(notes)
        if plan.commands or restarted or not self.state_saved:
            self._save_state()
        return plan

    # -- HAProxy ------------------------------------------------------------------------

    def _watch_haproxy(self) -> bool:
        """Notice a restart or reload (a new pid, or an uptime that went back)."""
        info = parse_info(self.api.show_info())
        pid, uptime = info.get("Pid", ""), int(info.get("Uptime_sec") or 0)
        before, self.haproxy = self.haproxy, (pid, uptime)
        if self.haproxy_error:
            log.info("HAProxy answers again (pid %s, up %ds)", pid, uptime)
            self.haproxy_error = ""
        if before is None:
            log.info("HAProxy pid %s, up %ds", pid, uptime)
            return False
        if before[0] != pid or uptime < before[1]:
            log.warning("HAProxy restarted or reloaded (pid %s -> %s, up %ds): re-applying "
                        "every slot", before[0], pid, uptime)
            return True
        return False

    def _shut_hung(self, servers: list) -> None:
        """Shut the sessions of a slot its checks have held down a while (hung.py)."""
        now = self.clock()
        for slot in self.hung.due(servers, now):
            node = next((n for n, s in self.assignment.items() if s == slot), "-")
            command = f"shutdown sessions server {self.backend}/{slot}"
            try:
                self.api.set_command(command)
            except RuntimeApiError as exc:
                log.error("HAProxy refused %r: %s", command, exc)
                continue
            log.warning("%s slot %s: its sessions shut, down by its checks for %.1fs "
                        "(a hung host would hold them until it wakes)", node, slot,
                        now - self.hung.down_since[slot])

    def _haproxy_failed(self, error: str) -> None:
        if error != self.haproxy_error:
            log.warning("HAProxy runtime API: %s (retrying every %.1fs)", error, self.period)
        self.haproxy_error = error

    def _carry_out(self, plan: Plan) -> None:
        for command in plan.commands:
            try:
                self.api.set_command(command)
            except RuntimeApiError as exc:
                # The next cycle reads HAProxy again and plans afresh.
                log.error("HAProxy refused %r: %s", command, exc)
                break
        for change in plan.changes:
            log.info("%s", change.line())

    def _notes(self, notes: dict[str, tuple[int, str]]) -> None:
        """Log each standing condition (a warning, a hold, a node left out) once when it
        appears; one that clears and comes back is logged again. Keyed by identity."""
        for key in sorted(set(notes) - self.said):
            level, message = notes[key]
            log.log(level, "%s", message)
        self.said = set(notes)

    def _save_state(self) -> None:
        """Write every backend's slots to the server-state-file, atomically."""
        if self.state_file is None:
            return
        try:
            text = self.api.show_all_servers_state()
            fd, tmp = tempfile.mkstemp(dir=self.state_file.parent,
                                       prefix=self.state_file.name + ".")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.state_file)
            self.state_saved = True
        except (RuntimeApiError, OSError) as exc:
            if not self.state_error:
                log.warning("cannot save the server state to %s: %s", self.state_file, exc)
            self.state_error = True
            return
        self.state_error = False
