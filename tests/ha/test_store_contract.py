"""One behaviour suite run against both stores: MemoryStore and RedisStore (real Redis).

The memory store exists so election and agent logic can be tested without Redis;
this suite is what keeps it honest.
"""

from __future__ import annotations

import signal
import time

import pytest
from polycorn.ha import events as ev
from polycorn.ha.cluster_state import Grant
from polycorn.ha.commands import NodeCommand
from polycorn.ha.memory_store import MemoryStore
from polycorn.ha.redis_client import make_client
from polycorn.ha.redis_store import RedisStore
from polycorn.ha.redis_url import parse_redis_url
from polycorn.ha.registry import Departure, NodeInfo, NodeState
from polycorn.ha.rollout import NodeRollout, RolloutRecord, RolloutState, Step
from polycorn.ha.snapshot import Lease
from polycorn.ha.store import FinishResult, Heartbeat, IssueResult
from polycorn.ha.timing import Timing
from support.procs import wait_until

TTL = 300  # ms: short, so expiry tests stay fast against the real server


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture(params=["memory", "redis"])
def store(request, shared_redis, cluster_name):
    if request.param == "memory":
        clock = Clock()
        s = MemoryStore(clock)
        s.advance = lambda ms: setattr(clock, "ms", clock.ms + ms)
        s.push_raw = s.push_raw_command
    else:
        client = make_client(parse_redis_url(shared_redis.url), Timing())
        s = RedisStore(client, cluster_name)
        s.advance = lambda ms: time.sleep(ms / 1000 + 0.02)
        s.push_raw = lambda node, inc, wire: client.rpush(s.keys.commands(node, inc), wire)
    yield s
    s.close()


def info(node_id: str, state: NodeState = NodeState.READY, **kw) -> NodeInfo:
    return NodeInfo(node_id, "host", "127.0.0.1:8000", 42, "r1", state, **kw)


def kinds(store) -> list[tuple[str, str]]:
    return [(e.kind, e.node) for e in store.read_events()]


def test_acquire_spends_an_epoch_only_on_success(store):
    assert store.acquire_lease("n1", 5000, "test") == 1
    assert store.acquire_lease("n2", 5000, "test") is None
    snap = store.snapshot()
    assert snap.lease == Lease("n1", 1) and snap.epoch == 1
    assert kinds(store) == [(ev.LEADER_ELECTED, "n1")]


def test_snapshot_without_members_reads_the_same_lease_and_epoch(store):
    assert store.acquire_lease("n1", 5000, "test") == 1
    store.register(info("n2"), 5000)
    full, lean = store.snapshot(), store.snapshot(members=False)
    assert [m.node_id for m in full.members] == ["n2"]
    assert (lean.lease, lean.epoch, lean.members) == (Lease("n1", 1), 1, ())
    assert lean.now_ms >= full.now_ms > 0


def test_cycle_read_takes_the_commands_with_the_lean_snapshot(store):
    assert store.acquire_lease("n1", 5000, "test") == 1
    inc = store.register(info("n2"), 5000)
    for wire in ("a", "b", "c"):
        store.push_raw("n2", inc, wire)
    snap, taken = store.cycle_read("n2", inc, limit=2)
    assert (snap.lease, snap.epoch, snap.members, taken) == (Lease("n1", 1), 1, (), ["a", "b"])
    assert store.cycle_read("n2", inc)[1] == ["c"]
    assert store.cycle_read("n2", inc)[1] == []
    # Every agent's read names Redis (its run id), as the leader's cluster_state does.
    assert snap.server_id and snap.server_id == store.cluster_state(5000).server_id
    assert snap.now_ms > 0


def test_lease_expires_and_next_epoch_is_higher(store):
    assert store.acquire_lease("n1", TTL, "test") == 1
    store.advance(TTL)
    assert store.snapshot().lease is None
    assert store.acquire_lease("n2", 5000, "test") == 2


def test_renew_is_compare_and_extend(store):
    store.acquire_lease("n1", TTL, "test")
    assert store.renew_lease(Lease("n1", 1), TTL * 4)
    assert not store.renew_lease(Lease("n1", 0), TTL * 4)  # wrong epoch
    assert not store.renew_lease(Lease("n2", 1), TTL * 4)  # wrong holder
    store.advance(TTL)
    assert store.snapshot().lease == Lease("n1", 1)  # extended past the first TTL


def test_resign_is_compare_and_delete(store):
    store.acquire_lease("n1", 5000, "test")
    assert not store.resign_lease(Lease("n1", 7), "wrong epoch")
    assert store.resign_lease(Lease("n1", 1), "shutting down")
    assert store.snapshot().lease is None
    events = store.read_events()
    assert events[-1].kind == ev.LEADER_RESIGNED and events[-1].reason == "shutting down"
    assert events[-1].epoch == 1


def test_register_heartbeat_and_state_events(store):
    inc = store.register(info("n1", NodeState.BOOTING), TTL)
    assert inc == 1
    assert store.heartbeat(info("n1", NodeState.READY, workers=2), inc, TTL) is Heartbeat.REFRESHED
    assert store.heartbeat(info("n1", NodeState.READY, workers=2), inc, TTL) is Heartbeat.REFRESHED
    snap, nodes = store.nodes(TTL)
    assert [m.node_id for m in snap.members] == ["n1"]
    assert nodes[0].alive and nodes[0].info.workers == 2 and nodes[0].incarnation == 1
    assert nodes[0].info.state is NodeState.READY
    assert kinds(store) == [(ev.NODE_JOINED, "n1"), (ev.NODE_READY, "n1")]


def test_every_state_change_logs_its_event_and_booting_none(store):
    # the HEARTBEAT script's table comes from events.STATE_EVENTS (ha/lua/render.py)
    inc = store.register(info("n1", NodeState.BOOTING), TTL)
    for state in (NodeState.READY, NodeState.DRAINING, NodeState.UPGRADING,
                  NodeState.STOPPING, NodeState.BOOTING, NodeState.READY):
        assert store.heartbeat(info("n1", state), inc, TTL) is Heartbeat.REFRESHED
    assert kinds(store) == [(ev.NODE_JOINED, "n1"), (ev.NODE_READY, "n1"),
                            (ev.NODE_DRAINING, "n1"), (ev.NODE_UPGRADING, "n1"),
                            (ev.NODE_STOPPING, "n1"), (ev.NODE_READY, "n1")]


def test_lapsed_node_is_seen_dead_then_rejoins(store):
    inc = store.register(info("n1"), TTL)
    store.advance(TTL)
    _, nodes = store.nodes(TTL)
    assert not nodes[0].alive
    assert nodes[0].as_json(store.snapshot().now_ms)["state"] == "dead"
    assert store.heartbeat(info("n1"), inc, TTL) is Heartbeat.REJOINED
    assert store.nodes(TTL)[1][0].alive


def test_newer_incarnation_supersedes_the_old_agent(store):
    old = store.register(info("n1"), 5000)
    new = store.register(info("n1"), 5000)
    assert new == old + 1
    assert store.heartbeat(info("n1"), old, 5000) is Heartbeat.SUPERSEDED
    assert not store.deregister("n1", old, ev.NODE_GONE, "old master exited")
    assert store.nodes(5000)[1][0].alive  # the new incarnation is untouched
    assert store.deregister("n1", new, ev.NODE_GONE, "master exited")
    assert store.snapshot().members == ()


def test_declare_dead_is_fenced_and_checks_the_heartbeat(store):
    store.register(info("n2"), TTL)
    epoch = store.acquire_lease("n1", 10_000, "test")
    lease = Lease("n1", epoch)
    assert not store.declare_dead(lease, "n2", TTL, "too early")  # still alive
    store.advance(TTL)
    assert not store.declare_dead(Lease("n1", epoch - 1), "n2", TTL, "stale leader")
    assert not store.declare_dead(Lease("n3", epoch), "n2", TTL, "not the holder")
    assert store.declare_dead(lease, "n2", TTL, "heartbeat lapsed")
    assert not store.declare_dead(lease, "n2", TTL, "again")  # once only
    dead = [e for e in store.read_events() if e.kind == ev.NODE_DEAD]
    assert len(dead) == 1 and dead[0].epoch == epoch and dead[0].extra["by"] == "n1"


def test_send_command_only_with_the_current_lease(store):
    epoch = store.acquire_lease("n1", 10_000, "test")
    lease = Lease("n1", epoch)
    good = NodeCommand("n2", 1, epoch, "ttin", 1, issued_by="n1")
    assert store.send_command(lease, good)
    assert not store.send_command(Lease("n1", epoch + 1), good)  # not the lease
    stale = NodeCommand("n2", 1, epoch - 1, "ttou", 1, issued_by="n1")
    assert not store.send_command(lease, stale)  # epoch differs from the lease's
    store.push_raw("n2", 1, stale.encode())  # a deposed leader writing directly
    other = NodeCommand("n2", 2, epoch, "drain", issued_by="n1")
    assert store.send_command(lease, other)  # for another incarnation: another queue
    taken = [NodeCommand.decode(w) for w in store.take_commands("n2", 1)]
    assert [c.id for c in taken] == [good.id, stale.id]
    assert store.take_commands("n2", 1) == []
    assert [NodeCommand.decode(w).id for w in store.take_commands("n2", 2)] == [other.id]


def test_events_read_after_an_id(store):
    store.emit(ev.Event("upgrade_started", "n1", 0, "USR2"))
    first = store.read_events()
    store.emit(ev.Event("upgrade_promoted", "n1", 0, "all workers ready", {"gen": "2"}))
    later = store.read_events(after=first[-1].id)
    assert [(e.kind, e.extra) for e in later] == [("upgrade_promoted", {"gen": "2"})]
    assert later[0].time_ms > 0


def lose_everything(store) -> None:
    if isinstance(store, MemoryStore):
        store.forget_everything()
    else:
        store.client.delete(*store.client.keys(f"{store.keys.prefix}:*"))


def test_lost_counters_are_restored_not_fatal(store):
    """Redis restarted without its data: agents rejoin and epochs never go backwards."""
    inc = store.register(info("n1"), 5000)
    store.register(info("n1"), 5000)
    inc = store.register(info("n1"), 5000)
    assert inc == 3
    lose_everything(store)
    assert store.heartbeat(info("n1"), inc, 5000) is Heartbeat.REJOINED
    assert store.register(info("n1"), 5000) == inc + 1  # the restored counter continues
    assert store.acquire_lease("n1", 5000, "after data loss", seen_epoch=7) == 8


def test_latest_events(store):
    for i in range(5):
        store.emit(ev.Event("upgrade_started", f"n{i}", 0, ""))
    assert [e.node for e in store.latest_events(2)] == ["n3", "n4"]


def test_lease_is_confirmed_by_an_online_replica(redis_farm, cluster_name):
    """With a replica, acquisition waits for its acknowledgement (WAIT 1): a lease only
    on the master could vanish in a failover."""
    master = redis_farm.server(extra=["--repl-diskless-sync-delay", "0"])
    replica = redis_farm.server(extra=["--replicaof", "127.0.0.1", str(master.port)])
    store = RedisStore(make_client(parse_redis_url(master.url), Timing()), cluster_name)

    def online():
        slave = master.client().info("replication").get("slave0")
        return isinstance(slave, dict) and slave.get("state") == "online"
    wait_until(online, 10, what="replica online")
    # The first write after the sync can be slow to reach a replica on a busy machine:
    # make sure it streams before timing an acknowledged acquisition.
    master.client().set("warm-up", "1")
    assert int(master.client().execute_command("WAIT", 1, 5000)) == 1
    started = time.monotonic()
    assert store.acquire_lease("n1", 5000, "test") == 1
    assert time.monotonic() - started < 0.3  # acknowledged, not timed out
    assert replica.client().get(store.keys.lease) == "1:n1"
    # A replica that stops acknowledging (paused) makes the acquisition give the lease back.
    store.resign_lease(Lease("n1", 1), "test")
    replica.signal(signal.SIGSTOP)
    try:
        assert store.acquire_lease("n2", 5000, "unconfirmed") is None
        assert store.snapshot().lease is None
    finally:
        replica.signal(signal.SIGCONT)


# -- the leader's duties: registry departures, death sentences, grants, rollouts ---------


def test_departures_decide_what_the_cluster_is_owed(store):
    for node in ("n1", "n2", "n3"):
        inc = store.register(info(node, workers_configured=2), 5000)
        store.heartbeat(info(node, workers_configured=2), inc, 5000)  # ready: on the roster
    assert store.cluster_state(5000).roster == {"n1": 2, "n2": 2, "n3": 2}
    assert store.deregister("n1", 1, ev.NODE_GONE, "stopping", Departure.LEFT)
    assert store.deregister("n2", 1, ev.NODE_GONE, "master exited", Departure.LOST)
    assert store.deregister("n3", 1, ev.NODE_GONE, "died booting", Departure.ABORTED)
    view = store.cluster_state(5000)
    assert view.roster == {"n2": 2, "n3": 2} and view.lost == {"n2": "master exited"}
    assert [r.info.node_id for r in view.records] == []
    gone = [e.extra["departure"] for e in store.read_events() if e.kind == ev.NODE_GONE]
    assert gone == ["left", "lost", "aborted"]
    epoch = store.acquire_lease("n9", 10_000, "test")
    lease = Lease("n9", epoch)
    assert not store.declare_dead(lease, "n3", 5000, "aborted: not lost, not a member")
    assert store.declare_dead(lease, "n2", 5000, "its agent reported its master gone")
    view = store.cluster_state(5000)
    assert view.lost == {} and list(view.dead) == ["n2"]
    assert view.dead["n2"].epoch == epoch and view.dead["n2"].by == "n9"
    assert view.dead["n2"].since_ms >= view.now_ms - 5000


def test_a_node_declared_dead_must_rejoin_as_a_new_incarnation(store):
    inc = store.register(info("n2"), TTL)
    epoch = store.acquire_lease("n1", 10_000, "test")
    store.advance(TTL)
    assert store.declare_dead(Lease("n1", epoch), "n2", TTL, "no heartbeat")
    assert store.heartbeat(info("n2"), inc, TTL) is Heartbeat.DECLARED_DEAD
    assert store.cluster_state(TTL).records == ()  # nothing was written
    assert store.register(info("n2"), TTL) == inc + 1
    view = store.cluster_state(TTL)
    assert view.dead == {} and [r.incarnation for r in view.records] == [inc + 1]
    assert kinds(store)[-1] == (ev.NODE_REJOINED, "n2")


def test_grants_are_fenced_and_queue_their_command(store):
    epoch = store.acquire_lease("n1", 10_000, "test")
    lease = Lease("n1", epoch)
    grant = Grant(1, 3, 1, 1234, ("n3",))
    cmd = NodeCommand("n2", 1, epoch, "set_workers", 3, issued_by="n1")
    assert not store.grant_workers(Lease("n1", epoch + 1), "n2", grant, cmd,
                                   ev.CAPACITY_GRANTED, "deposed")
    assert store.grant_workers(lease, "n2", grant, cmd, ev.CAPACITY_GRANTED, "covering n3")
    assert store.cluster_state(5000).grants == {"n2": grant}
    assert [NodeCommand.decode(w).id for w in store.take_commands("n2", 1)] == [cmd.id]
    event = store.read_events()[-1]
    assert (event.kind, event.node, event.extra["workers"]) == (ev.CAPACITY_GRANTED, "n2", "3")
    assert store.grant_workers(lease, "n2", None, None, "", "")  # closed, silently
    assert store.cluster_state(5000).grants == {} and store.read_events()[-1].id == event.id


def two_node_rollout(k: int = 1) -> RolloutRecord:
    return RolloutRecord("r-1", RolloutState.RUNNING, k, 60.0, ("n1", "n2", "n3"),
                   {n: NodeRollout(n, old_release="a") for n in ("n1", "n2", "n3")})


def issue(store, lease: Lease, node: str, step: Step = Step.UPGRADING):
    entry = NodeRollout(node, step, "a", 1, 42, started_ms=1, epoch=lease.epoch)
    cmd = NodeCommand(node, 1, lease.epoch, "upgrade", issued_by=lease.holder)
    return store.issue_upgrade(lease, "r-1", entry, cmd, "test")


def test_the_upgrade_slot_bound_is_enforced_by_the_store(store):
    assert store.create_rollout(two_node_rollout(k=1), "test") == (True, "r-1")
    assert store.create_rollout(two_node_rollout(k=1), "again") == (False, "r-1")
    epoch = store.acquire_lease("n9", 10_000, "test")
    lease, deposed = Lease("n9", epoch), Lease("n8", epoch - 1)
    assert issue(store, deposed, "n1") is IssueResult.NOT_LEADER
    assert issue(store, lease, "n1") is IssueResult.ISSUED
    assert issue(store, lease, "n2") is IssueResult.NO_SLOT  # one upgrading at a time
    assert issue(store, lease, "n1") is IssueResult.NOT_PENDING  # same epoch: never twice
    assert [NodeCommand.decode(w).cmd for w in store.take_commands("n1", 1)] == ["upgrade"]
    assert store.take_commands("n2", 1) == []
    view = store.cluster_state(5000)
    assert view.rollout.slots == {"n1"} and view.rollout.nodes["n1"].step is Step.UPGRADING
    done = NodeRollout("n1", Step.DONE, "a", 1, 42, "b", 2, 43)
    assert store.finish_upgrade(deposed, "r-1", done, "ready") is FinishResult.NOT_LEADER
    assert store.finish_upgrade(lease, "r-1", done, "ready") is FinishResult.RUNNING
    assert store.finish_upgrade(lease, "r-1", done, "again") is FinishResult.NOT_UPGRADING
    assert issue(store, lease, "n2") is IssueResult.ISSUED
    failed = NodeRollout("n2", Step.FAILED, "a", 1, 42, reason="rolled back")
    assert store.finish_upgrade(lease, "r-1", failed, "rolled back") is FinishResult.FAILED
    assert issue(store, lease, "n3") is IssueResult.NOT_RUNNING  # halted
    r = store.cluster_state(5000).rollout
    assert (r.state, r.failed_node, r.reason, r.slots) == (
        RolloutState.FAILED, "n2", "rolled back", frozenset())
    assert r.nodes["n1"].new_release == "b" and r.created_ms > 0 and r.finished_ms > 0
    assert store.create_rollout(two_node_rollout(), "after a failure") == (True, "r-1")


def test_a_newer_leader_may_reissue_an_upgrading_node(store):
    store.create_rollout(two_node_rollout(), "test")
    first = store.acquire_lease("n9", TTL, "test")
    assert issue(store, Lease("n9", first), "n1") is IssueResult.ISSUED
    store.advance(TTL)
    second = store.acquire_lease("n8", 10_000, "test")
    assert issue(store, Lease("n8", second), "n1") is IssueResult.REISSUED
    assert issue(store, Lease("n8", second), "n1") is IssueResult.NOT_PENDING
    assert len(store.take_commands("n1", 1)) == 2


def test_the_last_node_done_completes_the_rollout_and_abort(store):
    store.create_rollout(RolloutRecord("r-2", RolloutState.RUNNING, 2, 60.0, ("n1",),
                                 {"n1": NodeRollout("n1")}), "test")
    lease = Lease("n9", store.acquire_lease("n9", 10_000, "test"))
    store.issue_upgrade(lease, "r-2", NodeRollout("n1", Step.UPGRADING, epoch=lease.epoch),
                        NodeCommand("n1", 1, lease.epoch, "upgrade"), "test")
    assert store.finish_upgrade(lease, "r-2", NodeRollout("n1", Step.DONE), "ok") is \
        FinishResult.DONE
    assert ev.ROLLOUT_DONE in [k for k, _ in kinds(store)]
    assert store.abort_rollout("operator") is None  # nothing running
    store.create_rollout(two_node_rollout(), "test")
    assert store.abort_rollout("operator") == "r-1"
    assert store.cluster_state(5000).rollout.state is RolloutState.ABORTED


def test_drain_requests_and_forgetting_a_node(store):
    assert store.set_drained("n2", True, "maintenance")
    assert not store.set_drained("n2", True, "again")
    assert store.cluster_state(5000).drained == {"n2"}
    assert store.set_drained("n2", False, "done")
    assert [k for k, _ in kinds(store)] == [ev.DRAIN_REQUESTED] * 2 + [ev.UNDRAIN_REQUESTED]
    inc = store.register(info("n3", workers_configured=2), 5000)
    store.heartbeat(info("n3", workers_configured=2), inc, 5000)
    assert store.deregister("n3", inc, ev.NODE_GONE, "crash", Departure.LOST)
    assert store.forget_node("n3", "decommissioned")
    assert not store.forget_node("n3", "again")
    view = store.cluster_state(5000)
    assert view.roster == {} and view.lost == {} and view.server_id
