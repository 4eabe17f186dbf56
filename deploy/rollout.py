"""The rolling switch of hosts from one release to another, in batches, health-gated,
with automatic rollback. Used by `deploy` (to a new release) and `rollback`.

Per host: switch `current`, upgrade the service (polycorn's own health-gated USR2,
or a first start), then the gate: the host's nodes ready on the release in the
registry and a 2xx from the health path. A host that fails is switched back at
once. When a batch fails (its failed share exceeds max_fail_percent) no further
batch starts and every host already switched is rolled back, newest first.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass

from polycorn.deploy import hostops
from polycorn.deploy.batches import batch_failed, make_batches
from polycorn.deploy.fanout import each
from polycorn.deploy.hostops import ActivationFailed
from polycorn.deploy.inventory import DeploySettings
from polycorn.deploy.layout import Layout
from polycorn.deploy.preflight import Target
from polycorn.deploy.progress import Progress
from polycorn.deploy.remote import RemoteError

ACTIVATE_MARGIN = 60.0  # seconds beyond polycorn's --upgrade-timeout for the remote call


class Phase(enum.Enum):
    PENDING = "pending"  # not reached (a batch before it failed)
    ALREADY = "already"  # already on the release: nothing to do
    LIVE = "live"  # switched, upgraded and through the gate
    FAILED = "failed"  # a step failed; being switched back
    ROLLED_BACK = "rolled back"  # back on its previous release, through the gate
    ROLLBACK_FAILED = "rollback failed"  # could not be brought back: needs an operator


class Kind(enum.Enum):
    DEPLOY = "deploy"
    ROLLBACK = "rollback"


@dataclass
class HostRun:
    target: Target
    before: str | None  # where `current` pointed when the command began
    release: str  # where it should point at the end
    batch: int = 0
    phase: Phase = Phase.PENDING
    step: str = ""
    reason: str = ""
    service_on: str | None = None  # the release the service is known to run
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def now_on(self) -> str:
        if self.phase is Phase.ROLLBACK_FAILED:
            return "?"
        return self.release if self.phase in (Phase.LIVE, Phase.ALREADY) else (self.before or "-")


@dataclass
class Outcome:
    runs: list[HostRun]
    halted: str | None  # why the rollout stopped early, or None

    @property
    def ok(self) -> bool:
        return self.halted is None and all(r.phase in (Phase.LIVE, Phase.ALREADY)
                                           for r in self.runs)


class Rollout:
    def __init__(self, settings: DeploySettings, runs: Sequence[HostRun], progress: Progress,
                 kind: Kind) -> None:
        self.settings = settings
        self.layout = Layout(settings.base, settings.service)
        self.runs = list(runs)
        self.progress = progress
        self.kind = kind
        self.serial = settings.serial
        self.max_fail_percent = settings.max_fail_percent

    def run(self) -> Outcome:
        todo = [r for r in self.runs if r.before != r.release]
        for r in self.runs:
            if r.before == r.release:
                r.phase, r.reason = Phase.ALREADY, f"already on {r.release}"
        batches = make_batches(todo, self.serial)
        for number, batch in enumerate(batches, 1):
            label = f"batch {number}/{len(batches)}"
            for r in batch:
                r.batch = number
            each(batch, lambda r, label=label: self._publish(r, label))
            failed = [r for r in batch if r.phase is not Phase.LIVE]
            if batch_failed(len(failed), len(batch), self.max_fail_percent):
                why = (f"{label} failed: {len(failed)} of {len(batch)} hosts "
                       f"(max_fail_percent {self.max_fail_percent:g})")
                self.progress.line(f"{why}; rolling back the hosts already switched")
                self._roll_back_live(why)
                return Outcome(self.runs, why)
        return Outcome(self.runs, None)

    # -- one host ------------------------------------------------------------------------

    def _publish(self, r: HostRun, label: str) -> None:
        started = time.monotonic()
        t = r.target
        try:
            t.info = hostops.inspect(t.shell, self.settings)  # fresh: batches take time
            service = hostops.service_for(self.settings, t.info)
            r.service_on = r.before if t.info.live_masters(service) else None
            self._step(r, "switch current", label, f"{r.before or '-'} -> {r.release}")
            hostops.switch_current(t.shell, self.layout, r.release)
            self._step(r, "upgrade" if r.service_on else "start", label)
            hostops.activate(t.shell, service, t.info, r.before,
                             t.entry.upgrade_timeout + ACTIVATE_MARGIN)
            r.service_on = r.release
            self._step(r, "gate", label, f"registry and GET {self.settings.health_path or '/'}")
            hostops.wait_ready(t.shell, self.settings, t.entry, service, r.release,
                               self.settings.gate_timeout)
            hostops.append_revision(t.shell, self.layout, self._revision_text(r))
            r.phase = Phase.LIVE
            self._step(r, "ready", label, f"on {r.release}")
        except RemoteError as exc:
            if isinstance(exc, ActivationFailed):
                r.service_on = exc.kept
            r.phase, r.reason = Phase.FAILED, str(exc)
            self.progress.step(r.name, f"FAILED at {exc.step}: {exc.reason}", label)
            self._switch_back(r, f"{exc.step}: {exc.reason}", label)
        finally:
            r.seconds = time.monotonic() - started

    def _switch_back(self, r: HostRun, why: str, label: str) -> None:
        """Bring a host back to the release it had when the command began."""
        t = r.target
        service = hostops.service_for(self.settings, t.info)
        step = "rollback"
        try:
            if r.before is None:  # a first deploy: nothing to go back to, stop what started
                self._step(r, "stop (no previous release)", label)
                step = "stop"
                hostops.stop_service(t.shell, service, self.settings.python)
                hostops.remove_current(t.shell, self.layout)
            else:
                self._step(r, "rollback", label, f"{r.release} -> {r.before}")
                step = "switch current"
                hostops.switch_current(t.shell, self.layout, r.before)
                if r.service_on != r.before:
                    step = "upgrade"
                    info = hostops.inspect(t.shell, self.settings)
                    hostops.activate(t.shell, service, info, r.release,
                                     t.entry.upgrade_timeout + ACTIVATE_MARGIN)
                step = "gate"
                hostops.wait_ready(t.shell, self.settings, t.entry, service, r.before,
                                   self.settings.gate_timeout)
                r.service_on = r.before
            hostops.append_revision(t.shell, self.layout,
                                    f"release {r.release} rolled back to {r.before or '(none)'} "
                                    f"(automatic: {why}) by {operator_name()}")
            r.phase = Phase.ROLLED_BACK
            self._step(r, "rolled back", label, f"on {r.before or 'nothing'}")
        except RemoteError as exc:
            r.phase = Phase.ROLLBACK_FAILED
            r.reason = f"{r.reason}; rollback failed at {step}: {exc.reason}"
            self.progress.step(r.name, f"ROLLBACK FAILED at {step}: {exc.reason}", label)

    def _roll_back_live(self, why: str) -> None:
        live = [r for r in self.runs if r.phase is Phase.LIVE]
        for r in sorted(live, key=lambda r: -r.batch):
            started = time.monotonic()
            r.reason = f"rolled back because {why}"
            self._switch_back(r, why, f"batch {r.batch} (rollback)")
            r.seconds += time.monotonic() - started

    def _step(self, r: HostRun, step: str, label: str, detail: str = "") -> None:
        r.step = step
        self.progress.step(r.name, step, label, detail)

    def _revision_text(self, r: HostRun) -> str:
        if self.kind is Kind.ROLLBACK:
            return f"rollback from {r.before} to {r.release} by {operator_name()}"
        return f"release {r.release} deployed (was {r.before or 'none'}) by {operator_name()}"


def operator_name() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def summary_rows(outcome: Outcome) -> list[list[str]]:
    return [[r.name, str(r.batch or "-"), r.phase.value, r.now_on, r.step or "-",
             f"{r.seconds:.1f}s", r.reason] for r in outcome.runs]


SUMMARY_HEADERS = ("HOST", "BATCH", "RESULT", "ON", "LAST STEP", "TIME", "DETAIL")
