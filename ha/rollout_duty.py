"""The leader's side of a rolling upgrade: judge the upgrading nodes, start the next.

Each cycle reads the rollout from the view, judges every upgrading node from the
registry and its events (rollout.judge), records done or failed through Lua, and
issues the upgrade command to pending nodes while slots are free. Every write is
fenced by the lease and the slot bound is checked inside Redis, so a deposed
leader, or two leaders at once, can neither upgrade a node twice nor upgrade more
than max_unavailable nodes at once. A new leader resumes from the stored entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from polycorn.ha.cluster_state import ClusterState
from polycorn.ha.commands import NodeCommand
from polycorn.ha.events import Event
from polycorn.ha.rollout import (
    SERVING_STATES,
    NodeRollout,
    RolloutRecord,
    RolloutState,
    Step,
    UpgradeVerdict,
    free_slots,
    judge,
    next_candidates,
)
from polycorn.ha.snapshot import Lease
from polycorn.ha.store import ClusterStore, FinishResult, IssueResult

EVENTS_PER_READ = 2000  # events since the oldest upgrade began; a rollout produces a few dozen


@dataclass
class Progress:
    """What one cycle did to the rollout: its sentences, slots it freed, a halt."""

    said: list[str] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)  # nodes done this cycle: slots freed
    halted: bool = False

    def sentence(self, rollout: RolloutRecord) -> str | None:
        return f"rollout {rollout.id}: {'; '.join(self.said)}" if self.said else None


class RolloutDuty:
    def __init__(self, store: ClusterStore) -> None:
        self.store = store

    def cycle(self, view: ClusterState, lease: Lease) -> str | None:
        rollout = view.rollout
        if rollout is None or rollout.state is not RolloutState.RUNNING:
            return None
        progress = Progress()
        self._judge_upgrading(view, lease, rollout, progress)
        if not progress.halted:
            self._start_next(view, lease, rollout, progress)
        return progress.sentence(rollout)

    def _judge_upgrading(self, view: ClusterState, lease: Lease, rollout: RolloutRecord,
                         progress: Progress) -> None:
        upgrading = rollout.in_step(Step.UPGRADING)
        if not upgrading:
            return
        events = self._events_since(min(e.started_ms for e in upgrading))
        for entry in upgrading:
            node_events = [e for e in events
                           if e.node == entry.node_id and e.time_ms >= entry.started_ms]
            verdict = judge(entry, view.record(entry.node_id), node_events, view.now_ms,
                            rollout.timeout, lease.epoch)
            if verdict.verdict is UpgradeVerdict.DONE:
                new = verdict.record
                assert new is not None
                done = entry.evolve(step=Step.DONE, new_release=new.info.release,
                                    new_incarnation=new.incarnation, new_pid=new.info.pid,
                                    finished_ms=view.now_ms, reason=verdict.reason)
                if self.store.finish_upgrade(lease, rollout.id, done, verdict.reason) in (
                        FinishResult.RUNNING, FinishResult.DONE):
                    progress.finished.add(entry.node_id)
                    progress.said.append(f"{entry.node_id} done in {done.took():.1f}s "
                                         f"({entry.old_release} -> {done.new_release})")
            elif verdict.verdict is UpgradeVerdict.FAILED:
                self._fail(view, lease, rollout, entry, verdict.reason, progress)
                return
            elif verdict.verdict is UpgradeVerdict.REISSUE:
                self._issue(view, lease, rollout, entry, progress, verdict.reason)

    def _start_next(self, view: ClusterState, lease: Lease, rollout: RolloutRecord,
                    progress: Progress) -> None:
        for entry in rollout.in_step(Step.PENDING):
            if entry.node_id in view.dead or entry.node_id in view.lost:
                # Waiting for it would stall the rollout for good: halt and say why.
                self._fail(view, lease, rollout, entry, "the node is dead: it cannot be "
                           "upgraded", progress)
                return
        records = {r.info.node_id: r for r in view.records}
        free = free_slots(rollout, records, frozenset(progress.finished))
        for entry in next_candidates(rollout, lease.holder):
            if free <= 0:
                return
            issued = self._issue(view, lease, rollout, entry, progress, "its turn")
            if issued is IssueResult.ISSUED:
                free -= 1
            elif issued is IssueResult.NO_SLOT:
                return

    def _fail(self, view: ClusterState, lease: Lease, rollout: RolloutRecord, entry: NodeRollout,
              reason: str, progress: Progress) -> None:
        failed = entry.evolve(step=Step.FAILED, finished_ms=view.now_ms, reason=reason)
        if self.store.finish_upgrade(lease, rollout.id, failed, reason) is FinishResult.FAILED:
            progress.halted = True
            progress.said.append(f"{entry.node_id} FAILED ({reason}): rollout halted")

    def _issue(self, view: ClusterState, lease: Lease, rollout: RolloutRecord, entry: NodeRollout,
               progress: Progress, why: str) -> IssueResult | None:
        record = view.record(entry.node_id)
        if record is None or not record.alive or record.info.state not in SERVING_STATES:
            return None  # not serving right now (booting, gone a moment): next cycle
        command = NodeCommand(entry.node_id, record.incarnation, lease.epoch, "upgrade",
                              issued_by=lease.holder)
        if entry.step is Step.PENDING:
            entry = entry.evolve(old_release=record.info.release,
                                 old_incarnation=record.incarnation, old_pid=record.info.pid,
                                 started_ms=view.now_ms)
        issued = entry.evolve(step=Step.UPGRADING, epoch=lease.epoch, command_id=command.id)
        result = self.store.issue_upgrade(lease, rollout.id, issued, command,
                                          f"{why}; release {record.info.release}")
        if result in (IssueResult.ISSUED, IssueResult.REISSUED):
            progress.said.append(f"{result.value} upgrade of {entry.node_id} ({why})")
        return result

    def _events_since(self, started_ms: int) -> list[Event]:
        return self.store.read_events(after=f"{max(0, started_ms - 1)}-0", count=EVENTS_PER_READ)
