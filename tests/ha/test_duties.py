"""The leader's duties decided against the in-memory store with a fake clock: dead nodes,
the safety valves, capacity restore, drain requests and rolling upgrades. No mocks: the
MemoryStore is the same contract as Redis (test_store_contract.py keeps it honest)."""

from __future__ import annotations

from polycorn.ha import events as ev
from polycorn.ha.capacity import plan_capacity
from polycorn.ha.commands import NodeCommand
from polycorn.ha.duties import LeaderDuties, Mode
from polycorn.ha.election import Election
from polycorn.ha.events import Event
from polycorn.ha.memory_store import MemoryStore
from polycorn.ha.registry import Departure, NodeInfo, NodeState
from polycorn.ha.rollout import NodeRollout, RolloutRecord, RolloutState, Step
from polycorn.ha.snapshot import Lease
from polycorn.ha.timing import Timing

TTL_MS = 3000


class World:
    """Nodes n1.. (n1 leads) of 2 workers, ceiling 4, on a MemoryStore and a fake clock.
    Each node's 'master' is played by apply(): it executes the queued commands."""

    def __init__(self, n: int = 3, workers: int = 2, max_workers: int = 4,
                 leader: str = "n1") -> None:
        self.t = 100.0
        self.store = MemoryStore(lambda: int(self.t * 1000))
        self.infos: dict[str, NodeInfo] = {}
        self.inc: dict[str, int] = {}
        for i in range(1, n + 1):
            node = f"n{i}"
            self.infos[node] = NodeInfo(node, "h", f"127.0.0.1:{8000 + i}", 1000 + i, "r1",
                                        NodeState.READY, workers, workers, max_workers, workers)
            self.inc[node] = self.store.register(self.infos[node], TTL_MS)
            self.store.heartbeat(self.infos[node], self.inc[node], TTL_MS)  # on the roster
        self.leader = leader
        self.election, self.duties = self.lead(leader)
        self.silent: set[str] = set()

    def lead(self, node: str, agent_age: float = 60.0) -> tuple[Election, LeaderDuties]:
        """`node` elected now; its agent started `agent_age` seconds ago."""
        election = Election(node, Timing(), rng=lambda: 0.0)
        election.acquired(self.store.acquire_lease(node, 6000, "test", self.store.snapshot().epoch),
                          self.t)
        return election, LeaderDuties(self.store, election, clock=lambda: self.t,
                                      started=self.t - agent_age)

    @property
    def lease(self) -> Lease:
        assert self.election.lease is not None
        return self.election.lease

    def tick(self, seconds: float) -> None:
        """Time passes; every node not silent heartbeats; the leader renews."""
        self.t += seconds
        for node, info in self.infos.items():
            if node not in self.silent:
                self.store.heartbeat(info, self.inc[node], TTL_MS)
        assert self.store.renew_lease(self.lease, 6000)
        self.election.renewed(self.t, self.t)

    def cycle(self, stable: float = 10.0) -> str | None:
        decided = self.duties.cycle(stable)
        return decided.sentence if decided else None

    def set(self, node: str, **changes) -> None:
        self.infos[node] = self.infos[node].evolve(**changes)
        self.store.heartbeat(self.infos[node], self.inc[node], TTL_MS)

    def apply(self, node: str) -> list[NodeCommand]:
        """The node's master carries out its queued commands (workers start at once)."""
        commands = [NodeCommand.decode(w) for w in self.store.take_commands(node, self.inc[node])]
        for c in commands:
            if c.cmd == "set_workers":
                self.set(node, workers=c.n, workers_target=c.n)
            elif c.cmd in ("drain", "undrain"):
                self.set(node, state=NodeState.DRAINING if c.cmd == "drain" else NodeState.READY)
        return commands

    def upgrade(self, node: str, release: str = "r2") -> None:
        """The node's new master (new pid, new release) registers a new incarnation."""
        info = self.infos[node]
        self.infos[node] = info.evolve(pid=info.pid + 100, release=release,
                                       state=NodeState.READY)
        self.inc[node] = self.store.register(self.infos[node], TTL_MS)
        self.store.heartbeat(self.infos[node], self.inc[node], TTL_MS)

    def kinds(self, *wanted: str) -> list[tuple[str, str]]:
        return [(e.kind, e.node) for e in self.store.read_events(count=10_000)
                if e.kind in wanted]


# -- declaring the dead, and the safety valves -------------------------------------------


def test_a_lapsed_node_is_declared_dead_once():
    w = World()
    w.silent.add("n2")
    w.tick(3.0)
    assert w.cycle().startswith("declared dead at epoch 1: n2 (silent 3.0s)")
    assert not (w.cycle() or "").startswith("declared")
    dead = [e for e in w.store.read_events() if e.kind == ev.NODE_DEAD]
    assert [(e.node, e.epoch, e.extra["by"], e.reason) for e in dead] == [
        ("n2", 1, "n1", "no heartbeat for 3.0s")]


def test_a_step_of_redis_wall_clock_does_not_shorten_a_followed_nodes_ttl():
    # chaos --random 1: the wall clock Redis measures silence with ran 1.2 s ahead of
    # CLOCK_MONOTONIC (a 1.0 s step), and a node cut from Redis was declared dead 2.65 s
    # after its last heartbeat, inside the 3 s TTL.
    w = World()
    step = 0.0
    w.store.clock = lambda: int((w.t + step) * 1000)
    assert w.cycle() is None  # the leader follows n2 from here (it saw n2's heartbeat)
    w.tick(0.5)
    assert w.cycle() is None  # n2's heartbeat of t=100.5 seen at t=100.5
    w.silent.add("n2")
    w.tick(1.0)
    w.cycle()
    step = 1.2  # Redis' clock jumps ahead
    w.tick(1.0)  # n2 silent 2.0 s, 3.2 s by Redis' clock
    assert not (w.cycle() or "").startswith("declared")
    w.tick(0.5)  # 2.5 s
    assert not (w.cycle() or "").startswith("declared")
    w.tick(0.5)  # 3.0 s on the leader's clock since it saw the last heartbeat
    assert (w.cycle() or "").startswith("declared dead at epoch 1: n2")


def test_a_node_not_followed_yet_is_judged_on_redis_clock_alone():
    # A leader just elected has seen nothing: it must not wait another TTL to declare a
    # node that went silent under the old leader (the kill-node leader case).
    w = World()
    w.silent.add("n2")
    w.tick(5.0)
    assert (w.cycle() or "").startswith("declared dead at epoch 1: n2 (silent 5.0s)")


def test_an_agent_just_started_judges_nobody_on_redis_clock_alone():
    # chaos --random 19: a master restarted after kill-leader; its new agent, elected at
    # once on a primary a failover had just promoted with old data, declared n2 dead
    # ("no heartbeat for 8.4s") 2.9 s after n2 heartbeated on the other primary. A new
    # agent cannot know that Redis changed just before it started.
    w = World()
    w.silent.add("n2")
    w.tick(5.0)
    # n1's agent restarted 0.2 s ago and holds the lease again (the same epoch, here)
    w.duties = LeaderDuties(w.store, w.election, clock=lambda: w.t, started=w.t - 0.2)
    assert w.cycle() is None  # n2's silence is Redis' word alone: not yet
    w.tick(1.0)
    w.silent.discard("n2")  # n2 follows the Sentinels to this primary and heartbeats
    w.tick(1.0)
    assert w.cycle() is None
    w.silent.add("n2")  # silent for a TTL that this agent saw itself: dead
    said = []
    for _ in range(4):
        w.tick(1.0)
        said.append(w.cycle() or "")
    assert said[2].startswith("declared dead at epoch 1: n2 (silent 3.0s)"), said


def test_a_node_whose_master_is_gone_is_declared_dead_at_once():
    w = World()
    assert w.store.deregister("n3", w.inc["n3"], ev.NODE_GONE, "master exited (EOF)",
                              Departure.LOST)
    w.silent.add("n3")
    w.tick(0.25)
    assert w.cycle().startswith("declared dead at epoch 1: n3 (master gone)")
    dead = [e for e in w.store.read_events() if e.kind == ev.NODE_DEAD]
    assert dead[0].reason == "its agent reported its master gone: master exited (EOF)"


def test_a_node_that_left_on_purpose_is_not_dead_and_owed_nothing():
    w = World()
    w.set("n3", state=NodeState.STOPPING)
    assert w.store.deregister("n3", w.inc["n3"], ev.NODE_GONE, "stopping", Departure.LEFT)
    w.silent.add("n3")
    w.tick(5.0)
    assert w.cycle() is None
    view = w.store.cluster_state(TTL_MS)
    assert "n3" not in view.roster and view.dead == {}


def test_duties_pause_while_the_leaders_own_redis_calls_failed():
    w = World()
    w.silent.add("n2")
    w.tick(3.0)
    assert w.cycle(stable=1.0) == ("pausing my duties: my own Redis calls failed 1.0s ago: "
                                   "heartbeats may have lapsed for the same reason")
    assert w.cycle(stable=1.2).startswith("holding off, my own Redis calls failed 1.2s ago")
    assert w.duties.mode is Mode.PAUSED and w.store.cluster_state(TTL_MS).dead == {}
    w.tick(0.5)
    assert w.cycle(stable=6.9).startswith("holding off")  # nodes may still be backing off
    said = w.cycle(stable=Timing().recovery_grace)
    assert said.startswith("resuming my duties after 0.5s paused; declared dead at epoch 1: n2")
    assert w.kinds(ev.DUTIES_PAUSED, ev.DUTIES_RESUMED) == [
        (ev.DUTIES_PAUSED, "n1"), (ev.DUTIES_RESUMED, "n1")]  # one event per transition


def test_duties_pause_after_redis_changed_under_the_leader():
    w = World()
    assert w.cycle() is None  # the run id is learnt
    w.store.server_id = "memory-2"  # a Sentinel failover or a restart
    w.silent.add("n2")
    w.tick(3.0)
    assert w.cycle().startswith("pausing my duties: Redis changed under me 0.0s ago")
    w.tick(2.9)
    w.tick(4.0)
    assert w.cycle().startswith("holding off, Redis changed under me 6.9s ago")
    w.tick(0.2)
    assert "declared dead at epoch 1: n2" in w.cycle()


def test_a_mass_lapse_is_not_believed_at_first():
    w = World()
    w.silent.update({"n2", "n3"})
    w.tick(3.0)
    assert w.cycle() == ("pausing my duties: 2 of 3 nodes look dead at once: suspecting "
                         "Redis or the network, not the nodes")
    w.tick(3.0)
    w.tick(3.0)  # silence far past the TTL, the leader alive throughout
    assert "declared dead at epoch 1: n2 (silent 9.0s), n3 (silent 9.0s)" in w.cycle()


def test_a_mass_lapse_in_waves_is_one_mass_lapse():
    # Silenced at one moment, nodes lapse up to a heartbeat period apart: a wave of 2 of
    # 5 is believed, but the next (1 of the 3 left) makes 3 of 5 within a TTL
    # (40 of 61 nodes were declared in two waves of 20 before, loadtests/scale.py).
    w = World(n=5)
    w.silent.update({"n3", "n4"})
    w.tick(0.5)
    w.silent.add("n5")  # its last heartbeat came half a second later
    w.tick(2.6)
    assert "declared dead at epoch 1: n3 (silent 3.1s), n4 (silent 3.1s)" in w.cycle()
    w.tick(0.5)
    assert w.cycle() == ("pausing my duties: 3 of 5 nodes look dead at once (2 of them "
                         "believed gone in the last TTL): suspecting Redis or the network, "
                         "not the nodes")
    w.tick(3.0)  # past a TTL after the first wave: n5 alone is 1 of 3
    assert "declared dead at epoch 1: n5 (silent 6.1s)" in w.cycle()


def test_no_duties_past_the_deadline():
    w = World(n=2)
    w.silent.add("n2")
    w.t += 5.0  # no renewal: the deadline (4 s) passed
    assert w.cycle() is None
    assert w.store.snapshot().lease == Lease("n1", 1)
    assert len(w.store.snapshot().members) == 2


# -- capacity ------------------------------------------------------------------------------


def test_plan_spreads_the_dead_nodes_workers_within_ceilings():
    w = World(n=4, workers=2, max_workers=3)
    for node in ("n3", "n4"):
        w.silent.add(node)
    w.tick(3.0)
    w.tick(3.0)
    w.tick(3.0)
    w.cycle()  # n3 and n4 declared (a believed mass lapse)
    plan = plan_capacity(w.store.cluster_state(TTL_MS))
    assert plan.covering == ("n3", "n4") and plan.owed == 4
    assert plan.extra == {"n1": 1, "n2": 1} and plan.short == 2  # ceilings of 3 each
    w.store.set_drained("n2", True, "test")
    w.set("n2", state=NodeState.DRAINING)
    plan = plan_capacity(w.store.cluster_state(TTL_MS))
    assert plan.extra == {"n1": 1} and plan.short == 3  # a drained node serves nobody


def test_capacity_is_restored_then_given_back_when_the_node_returns():
    w = World()
    w.silent.add("n3")
    w.tick(3.0)
    said = w.cycle()
    assert "declared dead at epoch 1: n3" in said
    assert "capacity (covering n3: 2 workers owed): n1 -> 3 workers; n2 -> 3 workers" in said
    assert [(c.cmd, c.n, c.epoch, c.issued_by) for c in w.apply("n2")] == [
        ("set_workers", 3, 1, "n1")]
    assert [c.n for c in w.apply("n1")] == [3]
    granted = [e for e in w.store.read_events() if e.kind == ev.CAPACITY_GRANTED]
    assert [(e.node, e.extra["workers"]) for e in granted] == [("n1", "3"), ("n2", "3")]
    w.tick(1.0)
    assert w.cycle() is None  # confirmed by the nodes: nothing more to send
    assert w.apply("n1") == w.apply("n2") == []

    w.silent.discard("n3")
    w.inc["n3"] = w.store.register(w.infos["n3"], TTL_MS)  # restarted: a new incarnation
    assert w.kinds(ev.NODE_REJOINED) == [(ev.NODE_REJOINED, "n3")]
    w.tick(0.25)
    assert "n1 -> 2 workers; n2 -> 2 workers" in w.cycle()
    assert [c.n for c in w.apply("n1") + w.apply("n2")] == [2, 2]
    returned = [e.node for e in w.store.read_events() if e.kind == ev.CAPACITY_RETURNED]
    assert returned == ["n1", "n2"]
    w.tick(0.25)
    w.cycle()
    assert w.store.cluster_state(TTL_MS).grants == {}  # given back and confirmed: closed


def test_a_lost_grant_command_is_sent_again():
    w = World()
    w.silent.add("n3")
    w.tick(3.0)
    w.cycle()
    w.store.take_commands("n2", w.inc["n2"])  # lost on the way: the master never saw it
    w.apply("n1")
    w.tick(1.0)
    assert w.cycle() is None  # within the confirmation time
    w.tick(2.0)
    assert "n2 re-sent set_workers 3 (it reports 2)" in w.cycle()
    assert [c.n for c in w.apply("n2")] == [3]


def test_an_operators_own_worker_count_is_left_alone():
    w = World()
    w.set("n2", workers=5, workers_target=5)  # kill -TTIN, three times
    w.tick(1.0)
    assert w.cycle() is None
    assert w.apply("n2") == []


def test_ceilings_short_is_an_event_once():
    w = World(n=2, workers=2, max_workers=2)
    w.silent.add("n2")
    w.tick(3.0)
    assert "2 of 2 owed workers have no room" in w.cycle()
    w.tick(0.25)
    assert w.cycle() is None
    assert w.kinds(ev.CAPACITY_SHORT) == [(ev.CAPACITY_SHORT, "n1")]


# -- drain -------------------------------------------------------------------------------


def test_drain_requests_are_carried_out_and_reverted():
    w = World()
    assert w.store.set_drained("n2", True, "maintenance")
    assert w.cycle() == "sent drain n2 (requested by the operator)"
    assert w.cycle() is None  # not re-sent while the node catches up
    assert [c.cmd for c in w.apply("n2")] == ["drain"]
    w.tick(0.25)
    assert w.cycle() is None
    w.store.set_drained("n2", False, "done")
    assert w.cycle() == "sent undrain n2 (requested by the operator)"
    assert [c.cmd for c in w.apply("n2")] == ["undrain"]


def test_a_drained_node_that_restarts_is_drained_again():
    w = World()
    w.store.set_drained("n3", True, "maintenance")
    w.cycle()
    w.apply("n3")
    w.upgrade("n3")  # its new master comes up ready
    w.tick(0.25)
    assert w.cycle() == "sent drain n3 (requested by the operator)"
    assert [c.cmd for c in w.apply("n3")] == ["drain"]


# -- rolling upgrades ----------------------------------------------------------------------


def rollout(order=("n1", "n2", "n3"), k: int = 1, timeout: float = 60.0) -> RolloutRecord:
    return RolloutRecord("ro1", RolloutState.RUNNING, k, timeout, tuple(order),
                   {n: NodeRollout(n) for n in order})


def upgrading(w: World) -> set[str]:
    r = w.store.cluster_state(TTL_MS).rollout
    return {e.node_id for e in r.entries() if e.step is Step.UPGRADING}


def test_rollout_one_at_a_time_leader_last():
    w = World()
    assert w.store.create_rollout(rollout(), "test") == (True, "ro1")
    assert w.store.create_rollout(rollout(), "again") == (False, "ro1")
    assert w.cycle() == "rollout ro1: issued upgrade of n2 (its turn)"
    assert [(c.cmd, c.epoch) for c in w.apply("n2")] == [("upgrade", 1)]
    w.tick(0.25)
    assert w.cycle() is None and upgrading(w) == {"n2"}  # n3 waits for n2's new master
    w.upgrade("n2")
    w.tick(0.5)
    assert w.cycle() == ("rollout ro1: n2 done in 0.8s (r1 -> r2); "
                         "issued upgrade of n3 (its turn)")
    w.apply("n3")
    w.upgrade("n3")
    w.tick(0.5)
    assert "n3 done" in w.cycle() and upgrading(w) == {"n1"}
    w.apply("n1")
    w.upgrade("n1")
    w.tick(0.5)
    assert w.cycle() == "rollout ro1: n1 done in 0.5s (r1 -> r2)"
    r = w.store.cluster_state(TTL_MS).rollout
    assert r.state is RolloutState.DONE
    assert [(e.node_id, e.step, e.old_release, e.new_release) for e in r.entries()] == [
        (n, Step.DONE, "r1", "r2") for n in ("n1", "n2", "n3")]
    assert [k for k, _ in w.kinds(ev.ROLLOUT_NODE_STARTED)] == [ev.ROLLOUT_NODE_STARTED] * 3
    assert w.kinds(ev.ROLLOUT_DONE) == [(ev.ROLLOUT_DONE, "")]


def test_rollout_halts_at_the_first_rollback():
    w = World()
    w.store.create_rollout(rollout(), "test")
    w.cycle()
    w.apply("n2")
    w.store.emit(Event(ev.UPGRADE_ROLLED_BACK, "n2", 1,
                       "worker failed to boot: health check GET /health answered 500"))
    w.tick(0.25)
    assert w.cycle() == ("rollout ro1: n2 FAILED (rolled back: worker failed to boot: health "
                         "check GET /health answered 500): rollout halted")
    r = w.store.cluster_state(TTL_MS).rollout
    assert (r.state, r.failed_node, r.slots) == (RolloutState.FAILED, "n2", frozenset())
    w.tick(0.25)
    assert w.cycle() is None and w.apply("n3") == []  # nothing else is started


def test_rollout_fails_a_node_not_ready_in_time():
    w = World()
    w.store.create_rollout(rollout(k=1, timeout=5), "test")
    w.cycle()
    w.tick(5.5)
    assert w.cycle() == "rollout ro1: n2 FAILED (no new master ready within 5s): rollout halted"


def test_a_new_leader_resumes_and_reissues_a_command_that_never_started():
    w = World()
    w.store.create_rollout(rollout(order=("n2", "n3", "n1")), "test")
    w.cycle()
    assert upgrading(w) == {"n2"}
    w.store.take_commands("n2", w.inc["n2"])  # the node's fence rejected it as stale, say
    w.t += 7.0  # n1's lease lapses unrenewed (its agent paused, say)
    for node in ("n1", "n2", "n3"):
        w.store.heartbeat(w.infos[node], w.inc[node], TTL_MS)
    w.election, w.duties = w.lead("n3")
    assert w.lease.epoch == 2
    assert w.cycle() == "rollout ro1: reissued upgrade of n2 (issued at epoch 1 and not started)"
    assert [(c.cmd, c.epoch) for c in w.apply("n2")] == [("upgrade", 2)]
    w.tick(0.25)
    assert w.cycle() is None  # issued at this epoch now: no second re-issue
    w.upgrade("n2")
    w.tick(0.25)
    assert "n2 done" in w.cycle()


def test_an_upgrade_that_started_is_never_reissued():
    w = World()
    w.store.create_rollout(rollout(order=("n2", "n3", "n1")), "test")
    w.cycle()
    w.apply("n2")
    w.store.emit(Event(ev.UPGRADE_STARTED, "n2", 1, "new master pid 1234"))
    w.t += 7.0
    for node in ("n1", "n2", "n3"):
        w.store.heartbeat(w.infos[node], w.inc[node], TTL_MS)
    w.election, w.duties = w.lead("n3")
    assert w.cycle() is None
    assert w.apply("n2") == []


def test_a_dead_pending_node_halts_the_rollout():
    w = World()
    w.store.create_rollout(rollout(order=("n2", "n3", "n1"), k=2), "test")
    w.silent.add("n3")
    w.tick(3.0)
    said = w.cycle()
    assert "n3 FAILED (the node is dead: it cannot be upgraded)" in said
    assert w.store.cluster_state(TTL_MS).rollout.state is RolloutState.FAILED


def test_a_node_out_of_service_counts_against_max_unavailable():
    w = World()
    w.store.create_rollout(rollout(order=("n2", "n3", "n1"), k=1), "test")
    w.set("n3", state=NodeState.BOOTING)  # restarting on its own
    assert w.cycle() is None and upgrading(w) == set()
    w.set("n3", state=NodeState.READY)
    assert w.cycle() == "rollout ro1: issued upgrade of n2 (its turn)"
