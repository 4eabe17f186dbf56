"""The election state machine and its I/O edge, driven on the in-memory store with a
fake clock: every decision is asserted through the sentence the cycle returns."""

from __future__ import annotations

import pytest
from polycorn.ha import events as ev
from polycorn.ha.campaign import Campaign
from polycorn.ha.decision import Decision
from polycorn.ha.election import Action, Election, Role
from polycorn.ha.memory_store import MemoryStore
from polycorn.ha.snapshot import ElectionSnapshot, Lease
from polycorn.ha.timing import Timing

T = Timing()  # 1 s renew, 4 s step-down, 6 s lease


class World:
    """One fake clock shared by the store (ms) and every node (monotonic seconds)."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.store = MemoryStore(lambda: int(self.t * 1000))
        self.nodes: dict[str, Campaign] = {}

    def node(self, node_id: str, rng: float = 0.0) -> Campaign:
        c = Campaign(self.store, Election(node_id, T, rng=lambda: rng), clock=lambda: self.t)
        self.nodes[node_id] = c
        return c

    def cycle(self, node_id: str, eligible: bool = True, why: str = "") -> str:
        return self.nodes[node_id].cycle(self.store.snapshot(), eligible, why).sentence

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def world() -> World:
    return World()


def test_first_node_is_elected_and_others_follow(world):
    world.node("n1"), world.node("n2")
    # no jitter drawn: the candidate acquires in the same cycle it finds the lease vacant
    assert world.cycle("n1") == "elected leader at epoch 1: the lease was vacant"
    assert world.cycle("n2") == "following n1 (epoch 1)"
    assert world.cycle("n1") == "no action: I am n1, the leader at epoch 1, deadline +4.0s"


def test_candidate_waits_out_its_jitter(world):
    world.node("n1", rng=0.5)
    assert world.cycle("n1") == "lease vacant: candidate, trying at +0.1s"
    assert world.cycle("n1") == "lease vacant: candidate, trying at +0.1s"
    assert world.nodes["n1"].election.role is Role.CANDIDATE
    plan = world.nodes["n1"].election.plan(world.store.snapshot(), world.t + 0.1, True)
    assert (plan.action, plan.sentence) == (Action.ACQUIRE, "lease vacant: campaigning after epoch 0")
    world.advance(0.1)
    assert world.cycle("n1") == "elected leader at epoch 1: the lease was vacant"


def elect(world: World, node_id: str) -> None:
    assert world.cycle(node_id).startswith("elected leader")


def test_leader_renews_on_schedule_and_keeps_its_deadline(world):
    world.node("n1")
    elect(world, "n1")
    world.advance(1.0)
    assert world.cycle("n1") == "renewed epoch 1, deadline +4.0s"
    election = world.nodes["n1"].election
    assert election.deadline == pytest.approx(world.t + 4.0)
    for _ in range(10):  # ten more seconds of renewals: still the leader, same epoch
        world.advance(1.0)
        assert world.cycle("n1") == "renewed epoch 1, deadline +4.0s"
    assert election.is_leader(world.t)


def test_deadline_steps_down_without_the_store(world):
    leader = world.node("n1")
    elect(world, "n1")
    world.store.available = False
    world.advance(3.9)
    assert leader.election.expire(world.t) is None
    world.advance(0.2)
    sentence = leader.election.expire(world.t)
    assert sentence == ("stepping down from epoch 1: my deadline passed 0.1s ago without a "
                        "successful renewal")
    assert not leader.election.is_leader(world.t)
    # the lease is still in the store (6 s): the deadline fell strictly inside it
    world.store.available = True
    assert world.store.snapshot().lease == Lease("n1", 1)


def test_failed_renewal_keeps_leadership_only_until_the_deadline(world):
    leader = world.node("n1")
    elect(world, "n1")
    e = leader.election
    world.advance(1.0)
    assert e.call_failed(world.t, 0.5, "TimeoutError") == (
        "renewal of epoch 1 failed (TimeoutError); still leader until deadline +3.0s")
    assert e.is_leader(world.t) and e.renew_at == pytest.approx(world.t + 0.5)
    world.advance(2.9)
    assert e.call_failed(world.t, 2.0, "TimeoutError").endswith("deadline +0.1s")
    assert e.renew_at == pytest.approx(e.deadline)  # never scheduled past the deadline


def test_paused_leader_steps_down_and_cannot_act_with_its_old_epoch(world):
    """SIGSTOP past the lease: a new leader is elected; on resume the old one's first
    decision is to step down, and the store refuses its old lease."""
    old, new = world.node("n1"), world.node("n2")
    elect(world, "n1")
    world.advance(6.0)  # n1 is frozen: the lease expires in the store
    assert world.cycle("n2") == "elected leader at epoch 2: the lease was vacant"
    # n1 resumes: its first plan steps down, by its own deadline, before anything else
    plan = old.election.plan(world.store.snapshot(), world.t, True)
    assert plan.action is Action.STEP_DOWN
    assert "my deadline passed 2.0s ago" in plan.sentence
    assert not world.store.renew_lease(Lease("n1", 1), 6000)
    assert not world.store.declare_dead(Lease("n1", 1), "n2", 3000, "stale")
    assert world.cycle("n1") == "following n2 (epoch 2)"
    assert new.election.is_leader(world.t)


def test_leader_sees_another_lease_and_steps_down(world):
    leader = world.node("n1")
    elect(world, "n1")
    world.store.resign_lease(Lease("n1", 1), "operator")  # lease deleted behind its back
    world.store.acquire_lease("n2", 6000, "test")
    assert world.cycle("n1") == ("stepping down from epoch 1: the lease is held by n2 at epoch 2, "
                                 "not mine (epoch 1)")
    assert leader.election.role is Role.FOLLOWER
    assert [e.kind for e in world.store.read_events()][-1] == ev.LEADER_STEPPED_DOWN


def test_renewal_refused_steps_down_at_once(world):
    leader = world.node("n1")
    elect(world, "n1")
    world.advance(1.0)
    snap = world.store.snapshot()
    world.store.resign_lease(Lease("n1", 1), "lost between read and renew")
    assert leader.cycle(snap, True).sentence == ("stepping down from epoch 1: Redis refused the renewal "
                                                 "(the lease is no longer mine)")
    assert not leader.election.is_leader(world.t)


def test_ineligible_leader_resigns_and_successor_takes_over(world):
    world.node("n1"), world.node("n2")
    elect(world, "n1")
    assert world.cycle("n2") == "following n1 (epoch 1)"
    assert world.cycle("n1", eligible=False, why="node is draining") == \
        "resigned epoch 1: node is draining"
    assert world.cycle("n1", eligible=False, why="node is draining") == \
        "lease vacant, not campaigning: node is draining"
    elect(world, "n2")
    assert world.nodes["n2"].election.epoch == 2
    resigned = [e for e in world.store.read_events() if e.kind == ev.LEADER_RESIGNED]
    assert resigned[0].reason == "node is draining"


def test_a_lease_in_my_name_that_i_do_not_lead_with_is_released(world):
    world.store.acquire_lease("n1", 6000, "previous agent process")
    world.node("n1")  # a restarted agent: same node id, no leadership
    assert world.cycle("n1") == ("released a stale lease: epoch 1 is held in my name but I do "
                                 "not lead with it")
    assert world.store.snapshot().lease is None
    elect(world, "n1")
    assert world.nodes["n1"].election.epoch == 2


def test_ten_simultaneous_candidates_one_leader_one_epoch(world):
    for i in range(10):
        world.node(f"n{i}", rng=i / 10)
    for _ in range(5):
        for i in range(10):
            world.cycle(f"n{i}")
        world.advance(0.05)
    leaders = [n for n, c in world.nodes.items() if c.election.is_leader(world.t)]
    assert leaders == ["n0"]
    assert world.store.snapshot().epoch == 1


def test_snapshot_is_what_plans_read():
    e = Election("n1", T, rng=lambda: 0.0)
    snap = ElectionSnapshot(0, Lease("n2", 7), 7, ())
    plan = e.plan(snap, 0.0, True)
    assert (plan.action, plan.sentence) == (Action.WAIT, "following n2 (epoch 7)")


def test_routine_decisions_name_their_topic_and_real_ones_none(world):
    # the agent logs a routine topic once until a real decision (no sentence parsing)
    world.node("n1"), world.node("n2", rng=0.5)
    decide = world.nodes["n1"].cycle
    elected = decide(world.store.snapshot(), True)
    assert not elected.routine
    assert world.nodes["n2"].cycle(world.store.snapshot(), True) == Decision(
        "following n1 (epoch 1)", "following n1 (epoch 1)")
    assert decide(world.store.snapshot(), True).routine_topic == "no action: I am n1"
    world.advance(1.0)
    assert decide(world.store.snapshot(), True) == Decision(
        "renewed epoch 1, deadline +4.0s", "renewed epoch 1")
    resigned = decide(world.store.snapshot(), False, "node is draining")
    assert not resigned.routine
    assert decide(world.store.snapshot(), False, "x").routine_topic == "lease vacant"
    world.nodes["n2"].election.role = Role.FOLLOWER  # a fresh candidate draws its jitter
    assert world.nodes["n2"].cycle(world.store.snapshot(), True).routine_topic == \
        "lease vacant: candidate"


def test_the_resign_reason_is_carried_not_parsed_out_of_the_sentence(world):
    # a reason with its own ": " reaches the event whole
    world.node("n1")
    elect(world, "n1")
    why = "node is stopping: TERM received"
    plan = world.nodes["n1"].election.plan(world.store.snapshot(), world.t, False, why)
    assert (plan.action, plan.reason) == (Action.RESIGN, why)
    assert world.cycle("n1", eligible=False, why=why) == f"resigned epoch 1: {why}"
    resigned = [e for e in world.store.read_events() if e.kind == ev.LEADER_RESIGNED]
    assert [e.reason for e in resigned] == [why]
