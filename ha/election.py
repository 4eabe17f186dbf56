"""Leader election as a pure state machine: follower, candidate, leader.

No I/O: the caller reads a ElectionSnapshot, asks `plan()` what to do, performs it
against the store and reports the outcome back (`acquired`, `renewed`, ...). Every
step returns one sentence saying what was decided and why (logged; asserted in
tests). "I am leader" is `deadline > now` on the local monotonic clock, and only a
successful acquisition or renewal moves the deadline, to the moment the call was
*sent* plus the step-down time, which is shorter than the lease in Redis.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from polycorn.ha.snapshot import ElectionSnapshot, Lease
from polycorn.ha.timing import Timing


class Role(Enum):
    FOLLOWER = "follower"  # someone else leads, or this node may not campaign
    CANDIDATE = "candidate"  # the lease is vacant; an attempt is scheduled after a jitter
    LEADER = "leader"  # holds the lease, and the local deadline has not passed


class Action(Enum):
    WAIT = "wait"
    ACQUIRE = "acquire"  # compare-and-create the lease
    RENEW = "renew"  # compare-and-extend our lease
    RESIGN = "resign"  # compare-and-delete a lease held in our name
    STEP_DOWN = "step_down"  # local only: stop acting as leader (the event is best effort)


@dataclass(frozen=True)
class Plan:
    action: Action
    sentence: str
    lease: Lease | None = None  # the lease to renew or resign
    reason: str = ""  # RESIGN: why, as the leader_resigned event says it
    routine_topic: str = ""  # WAIT: the topic under which a routine wait is logged once


def _in(seconds: float) -> str:
    return f"{seconds:+.1f}s"


class Election:
    def __init__(self, node_id: str, timing: Timing,
                 rng: Callable[[], float] = random.random) -> None:
        self.node_id = node_id
        self.timing = timing
        self.rng = rng
        self.role = Role.FOLLOWER
        self.lease: Lease | None = None  # ours, while leader
        self.deadline = 0.0  # monotonic; leadership ends here unless renewed
        self.renew_at = 0.0
        self.attempt_at = 0.0  # candidate's scheduled acquisition

    # -- questions -----------------------------------------------------------------

    def is_leader(self, now: float) -> bool:
        return self.role is Role.LEADER and self.deadline > now

    @property
    def epoch(self) -> int:
        return self.lease.epoch if self.lease else 0

    def next_wakeup(self, now: float) -> float:
        """When the election next needs a cycle (the caller may come sooner)."""
        if self.role is Role.LEADER:
            return min(self.renew_at, self.deadline)
        if self.role is Role.CANDIDATE:
            return self.attempt_at
        return now + self.timing.follower_poll * (0.5 + 0.5 * self.rng())

    # -- deciding ------------------------------------------------------------------

    def plan(self, snap: ElectionSnapshot, now: float, eligible: bool, why_not: str = "") -> Plan:
        """Decide this cycle's one action from the snapshot and the local clock."""
        if self.role is Role.LEADER:
            return self._plan_as_leader(snap, now, eligible, why_not)
        return self._plan_as_non_leader(snap, now, eligible, why_not)

    def expire(self, now: float) -> str | None:
        """Local step-down when the deadline has passed: needs no store, so it also runs
        while Redis is unreachable. Returns the sentence, or None when nothing changed."""
        if self.role is Role.LEADER and self.deadline <= now:
            return self._step_down(f"my deadline passed {now - self.deadline:.1f}s ago "
                                   f"without a successful renewal").sentence
        return None

    def _plan_as_leader(self, snap: ElectionSnapshot, now: float, eligible: bool,
                        why_not: str) -> Plan:
        assert self.lease is not None
        if self.deadline <= now:
            return self._step_down(f"my deadline passed {now - self.deadline:.1f}s ago "
                                   f"without a successful renewal")
        if snap.lease != self.lease:
            held = (f"held by {snap.lease.holder} at epoch {snap.lease.epoch}"
                    if snap.lease else "vacant")
            return self._step_down(f"the lease is {held}, not mine (epoch {self.lease.epoch})")
        if not eligible:
            return Plan(Action.RESIGN, f"resigning epoch {self.lease.epoch}: {why_not}", self.lease,
                        reason=why_not)
        if now >= self.renew_at:
            return Plan(Action.RENEW, f"renewing epoch {self.lease.epoch}, deadline "
                        f"{_in(self.deadline - now)}", self.lease)
        return Plan(Action.WAIT, f"no action: I am {self.node_id}, the leader at epoch "
                    f"{self.lease.epoch}, deadline {_in(self.deadline - now)}",
                    routine_topic=f"no action: I am {self.node_id}")

    def _plan_as_non_leader(self, snap: ElectionSnapshot, now: float, eligible: bool,
                            why_not: str) -> Plan:
        lease = snap.lease
        if lease is not None and lease.holder == self.node_id:
            # Redis holds a lease in our name that this process does not lead with (it
            # stepped down on its deadline, or the agent restarted): give it back so
            # the others need not wait for it to expire.
            self.role = Role.FOLLOWER
            why = f"epoch {lease.epoch} is held in my name but I do not lead with it"
            return Plan(Action.RESIGN, f"releasing a stale lease: {why}", lease, reason=why)
        if lease is not None:
            self.role = Role.FOLLOWER
            following = f"following {lease.holder} (epoch {lease.epoch})"
            return Plan(Action.WAIT, following, routine_topic=following)
        if not eligible:
            self.role = Role.FOLLOWER
            return Plan(Action.WAIT, f"lease vacant, not campaigning: {why_not}",
                        routine_topic="lease vacant")
        if self.role is Role.FOLLOWER:
            self.role = Role.CANDIDATE
            self.attempt_at = now + self.timing.candidate_jitter * self.rng()
            if self.attempt_at > now:
                return self._wait_as_candidate(now)
        if now >= self.attempt_at:
            return Plan(Action.ACQUIRE, f"lease vacant: campaigning after epoch {snap.epoch}")
        return self._wait_as_candidate(now)

    def _wait_as_candidate(self, now: float) -> Plan:
        return Plan(Action.WAIT, f"lease vacant: candidate, trying at "
                    f"{_in(self.attempt_at - now)}", routine_topic="lease vacant: candidate")

    def _step_down(self, why: str) -> Plan:
        lease = self.lease
        self._become_follower()
        return Plan(Action.STEP_DOWN, f"stepping down from epoch {lease.epoch if lease else 0}: "
                    f"{why}", lease)

    def _become_follower(self) -> None:
        self.role = Role.FOLLOWER
        self.lease = None
        self.deadline = 0.0

    # -- outcomes ------------------------------------------------------------------

    def acquired(self, epoch: int, sent_at: float) -> str:
        """The acquisition sent at `sent_at` (monotonic) succeeded with `epoch`."""
        self.role = Role.LEADER
        self.lease = Lease(self.node_id, epoch)
        self.deadline = sent_at + self.timing.step_down
        self.renew_at = sent_at + self.timing.renew
        return f"elected leader at epoch {epoch}: the lease was vacant"

    def acquire_lost(self, reason: str) -> str:
        self.role = Role.FOLLOWER
        return f"not elected: {reason}"

    def renewed(self, sent_at: float, now: float) -> str:
        self.deadline = sent_at + self.timing.step_down
        self.renew_at = sent_at + self.timing.renew
        return f"renewed epoch {self.epoch}, deadline {_in(self.deadline - now)}"

    def renew_refused(self) -> str:
        """Redis says the lease is no longer ours: stop at once."""
        return self._step_down("Redis refused the renewal (the lease is no longer mine)").sentence

    def call_failed(self, now: float, retry_in: float, error: str) -> str:
        """A store call failed (Redis unreachable or slow). A leader keeps its role
        until its own deadline, and retries before it if it can."""
        if self.role is Role.LEADER:
            self.renew_at = min(now + retry_in, self.deadline)
            return (f"renewal of epoch {self.epoch} failed ({error}); still leader until "
                    f"deadline {_in(self.deadline - now)}")
        self.role = Role.FOLLOWER
        return f"cannot read the cluster ({error}); retrying in {retry_in:.1f}s"

    def resigned(self, why: str) -> str:
        epoch = self.epoch
        self._become_follower()
        return f"resigned epoch {epoch}: {why}" if epoch else f"released a stale lease: {why}"
