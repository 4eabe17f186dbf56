"""The I/O edge of the election: carry out the pure state machine's plan on the store.

One call per agent cycle: ask Election.plan() what to do with this cycle's
snapshot, do it (acquire, renew, resign), report the outcome back, and return
the Decision that says what was decided and why (ha/decision.py). The send time of an acquire or
renew (monotonic) is taken *before* the call: the lease in Redis started no
earlier, so the local deadline stays inside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from polycorn.ha import events as ev
from polycorn.ha.decision import Decision
from polycorn.ha.election import Action, Election, Plan
from polycorn.ha.events import Event
from polycorn.ha.snapshot import ElectionSnapshot
from polycorn.ha.store import ClusterStore, StoreUnavailable
from polycorn.server import instrument


class Campaign:
    def __init__(self, store: ClusterStore, election: Election,
                 clock: Callable[[], float] = time.monotonic,
                 seen_epoch: Callable[[], int] = lambda: 0) -> None:
        self.store = store
        self.election = election
        self.clock = clock
        self.seen_epoch = seen_epoch  # the node's fence: a new epoch must exceed it

    @property
    def lease_ms(self) -> int:
        return int(self.election.timing.lease * 1000)

    def cycle(self, snap: ElectionSnapshot, eligible: bool, why_not: str = "") -> Decision:
        """Decide and act once; StoreUnavailable propagates (the caller backs off)."""
        plan = self.election.plan(snap, self.clock(), eligible, why_not)
        handler = {Action.WAIT: self._wait, Action.ACQUIRE: self._acquire,
                   Action.RENEW: self._renew, Action.RESIGN: self._resign,
                   Action.STEP_DOWN: self._stepped_down}[plan.action]
        return handler(plan)

    def _wait(self, plan: Plan) -> Decision:
        return Decision(plan.sentence, plan.routine_topic)

    def _acquire(self, plan: Plan) -> Decision:
        sent = self.clock()
        epoch = self.store.acquire_lease(self.election.node_id, self.lease_ms, plan.sentence,
                                         self.seen_epoch())
        if epoch is None:
            return Decision(self.election.acquire_lost("another node took the lease first"))
        # Counted by the winner only, so the cluster counts each election once.
        instrument.current().event(instrument.LEADER_CHANGED, f"epoch {epoch}")
        return Decision(self.election.acquired(epoch, sent))

    def _renew(self, plan: Plan) -> Decision:
        assert plan.lease is not None
        sent = self.clock()
        if self.store.renew_lease(plan.lease, self.lease_ms):
            return Decision(self.election.renewed(sent, self.clock()),
                            routine_topic=f"renewed epoch {plan.lease.epoch}")
        sentence = self.election.renew_refused()
        self.announce_step_down(plan.lease.epoch, sentence)
        return Decision(sentence)

    def _resign(self, plan: Plan) -> Decision:
        assert plan.lease is not None
        why = plan.reason or plan.sentence
        self.store.resign_lease(plan.lease, why)
        return Decision(self.election.resigned(why))

    def _stepped_down(self, plan: Plan) -> Decision:
        self.announce_step_down(plan.lease.epoch if plan.lease else 0, plan.sentence)
        return Decision(plan.sentence)

    def resign_now(self, reason: str) -> str | None:
        """Give the lease back at once (master gone, shutting down); None if not leader."""
        lease = self.election.lease
        if lease is None:
            return None
        self.store.resign_lease(lease, reason)
        return self.election.resigned(reason)

    def announce_step_down(self, epoch: int, sentence: str) -> None:
        """Best effort: the step-down itself already happened locally."""
        try:
            self.store.emit(Event(ev.LEADER_STEPPED_DOWN, self.election.node_id, epoch, sentence))
        except StoreUnavailable:
            pass
