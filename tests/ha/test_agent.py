"""The real agent, driven by fake masters over real socketpairs, against real Redis.

Each node is a fake master process and the agent it forked; faults are real
signals (SIGKILL, SIGSTOP/SIGCONT) on those processes and on redis-server.
Failover times are measured and printed (run with -s to see them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from polycorn.ha import events as ev
from polycorn.ha.commands import NodeCommand
from polycorn.ha.redis_client import make_client
from polycorn.ha.redis_store import RedisStore
from polycorn.ha.redis_url import parse_redis_url
from polycorn.ha.snapshot import Lease
from polycorn.ha.timing import Timing
from support.procs import wait_until

TTL_MS = 3000


def observer(url: str, cluster: str) -> RedisStore:
    return RedisStore(make_client(parse_redis_url(url), Timing(), client_name="test"), cluster)


def ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polycorn.ha.ctl", *args],
                          capture_output=True, text=True, timeout=30)


def report(what: str, seconds: float) -> None:
    print(f"\nFAILOVER {what}: {seconds:.2f}s")


def start_cluster(fake_nodes, url: str, cluster: str, n: int = 3, **kw):
    nodes = [fake_nodes(url, cluster, f"n{i + 1}", **kw) for i in range(n)]
    store = observer(url, cluster)

    def settled():
        snap, records = store.nodes(TTL_MS)
        ready = [r for r in records if r.alive and r.info.state.value == "ready"]
        return snap.lease is not None and len(ready) == n and snap
    snap = wait_until(settled, 15, what=f"{n} ready nodes and a leader")
    by_id = {node.node_id: node for node in nodes}
    return nodes, store, by_id[snap.lease.holder], snap.lease


def test_three_nodes_one_leader_and_ctl_status(redis_farm, fake_nodes, cluster_name):
    redis = redis_farm.server()
    nodes, store, leader, lease = start_cluster(fake_nodes, redis.url, cluster_name)
    done = ctl("status", "--json", "--redis", redis.url, "--cluster", cluster_name)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["leader"] == leader.node_id and status["epoch"] == lease.epoch
    assert sorted(n["node_id"] for n in status["nodes"]) == ["n1", "n2", "n3"]
    for n in status["nodes"]:
        assert n["state"] == "ready" and n["release"] == "r1" and n["workers"] == 2
        assert n["workers_configured"] == 2 and n["max_workers"] == 4
        assert n["address"] == "127.0.0.1:8000" and n["heartbeat_age"] < 3 and n["pid"] > 0
    elected = [e for e in store.read_events() if e.kind == ev.LEADER_ELECTED]
    assert [(e.node, e.epoch) for e in elected] == [(leader.node_id, lease.epoch)]
    text = ctl("status", "--redis", redis.url, "--cluster", cluster_name)
    assert f"leader {leader.node_id} (epoch {lease.epoch}); 3 of 3 nodes alive" in text.stdout
    assert ctl("leader", "--redis", redis.url, "--cluster", cluster_name).stdout.strip() == \
        f"{leader.node_id} epoch {lease.epoch}"

    # The command path: leader -> Redis (Lua-checked lease) -> node's agent -> its master.
    target = next(n for n in nodes if n is not leader)
    incarnation = next(r.incarnation for r in store.nodes(TTL_MS)[1]
                       if r.info.node_id == target.node_id)
    command = NodeCommand(target.node_id, incarnation, lease.epoch, "ttin", 1,
                          issued_by=leader.node_id)
    assert store.send_command(lease, command)
    relayed = wait_until(lambda: target.commands(), 5, what="the command at the master")
    assert relayed == [{"type": "command", "id": command.id, "cmd": "ttin", "n": 1}]
    result = wait_until(lambda: [e for e in store.read_events() if e.kind == ev.COMMAND_RESULT],
                        5, what="the command's result event")
    assert result[0].extra["id"] == command.id and result[0].extra["ok"] == "1"
    assert result[0].node == target.node_id and result[0].epoch == lease.epoch


def test_kill_master_only_agent_resigns_and_new_leader_within_1s(redis_farm, fake_nodes,
                                                                  cluster_name):
    redis = redis_farm.server()
    nodes, store, leader, lease = start_cluster(fake_nodes, redis.url, cluster_name)
    start = time.monotonic()
    leader.kill_master()

    def new_leader():
        snap = store.snapshot()
        return snap.lease if snap.lease and snap.lease.holder != leader.node_id else None
    successor = wait_until(new_leader, 5, interval=0.01, what="a new leader")
    took = time.monotonic() - start
    report("master killed -> new leader", took)
    assert took < 1.0
    assert successor.epoch > lease.epoch
    wait_until(lambda: not leader.agent_alive(), 5, what="the orphaned agent to exit")
    kinds = [(e.kind, e.node, e.reason) for e in store.read_events()]
    reason = "master exited (EOF on the sidecar channel)"
    assert (ev.LEADER_RESIGNED, leader.node_id, reason) in kinds
    assert (ev.NODE_GONE, leader.node_id, reason) in kinds
    assert leader.node_id not in [m.node_id for m in store.snapshot().members]


def test_kill_whole_leader_node_new_leader_and_dead_node(redis_farm, fake_nodes, cluster_name):
    redis = redis_farm.server()
    nodes, store, leader, lease = start_cluster(fake_nodes, redis.url, cluster_name)
    start = time.monotonic()
    leader.kill_node()

    def seen_dead():
        records = store.nodes(TTL_MS)[1]
        return all(not r.alive for r in records if r.info.node_id == leader.node_id)
    wait_until(seen_dead, 6, interval=0.05, what="the killed node seen dead")
    dead_seen = time.monotonic() - start

    def new_leader():
        snap = store.snapshot()
        return snap.lease if snap.lease and snap.lease.holder != leader.node_id else None
    successor = wait_until(new_leader, 10, interval=0.05, what="a new leader")
    elected = time.monotonic() - start
    wait_until(lambda: [e for e in store.read_events()
                        if e.kind == ev.NODE_DEAD and e.node == leader.node_id], 5,
               what="node_dead event")
    dead_event = time.monotonic() - start
    report("node killed -> seen dead in the registry", dead_seen)
    report("node killed -> new leader", elected)
    report("node killed -> node_dead event", dead_event)
    assert dead_seen < 3.0 + 1.0  # node TTL + 1 s
    assert elected < 6.0 + 1.0  # lease + 1 s
    assert successor.epoch > lease.epoch
    dead = [e for e in store.read_events() if e.kind == ev.NODE_DEAD]
    assert [(e.node, e.epoch, e.extra["by"]) for e in dead] == [
        (leader.node_id, successor.epoch, successor.holder)]


def test_paused_leader_is_replaced_and_fenced(redis_farm, fake_nodes, cluster_name):
    """SIGSTOP of the leader's agent past its lease, then SIGCONT."""
    redis = redis_farm.server()
    nodes, store, leader, lease = start_cluster(fake_nodes, redis.url, cluster_name)
    os.kill(leader.agent_pid, signal.SIGSTOP)
    try:
        def new_leader():
            snap = store.snapshot()
            return snap.lease if snap.lease and snap.lease.holder != leader.node_id else None
        successor = wait_until(new_leader, 10, interval=0.05, what="a new leader")
        assert successor.epoch > lease.epoch
        resumed_after = len(store.read_events())
        time.sleep(0.5)
    finally:
        os.kill(leader.agent_pid, signal.SIGCONT)
    wait_until(lambda: f"stepping down from epoch {lease.epoch}: my deadline passed" in
               leader.log(), 5, what="the old leader to step down")
    time.sleep(1.5)  # give the old leader every chance to misbehave
    assert store.snapshot().lease == successor
    later = store.read_events()[resumed_after:]
    acted = [e for e in later if e.epoch == lease.epoch and e.kind != ev.LEADER_STEPPED_DOWN]
    assert acted == [], acted
    assert any(e.kind == ev.LEADER_STEPPED_DOWN and e.node == leader.node_id for e in later)

    # A command stamped with the old epoch is rejected by every node.
    records = {r.info.node_id: r for r in store.nodes(TTL_MS)[1]}
    stale_ids = {}
    for node in nodes:
        stale = NodeCommand(node.node_id, records[node.node_id].incarnation, lease.epoch,
                            "ttou", 1, issued_by=leader.node_id)
        assert not store.send_command(Lease(leader.node_id, lease.epoch), stale)  # Lua says no
        store.client.rpush(store.keys.commands(node.node_id, stale.incarnation), stale.encode())
        stale_ids[node.node_id] = stale.id

    def rejected():
        found = {e.node: e for e in store.read_events() if e.kind == ev.COMMAND_REJECTED_STALE}
        return found if len(found) == len(nodes) else None
    found = wait_until(rejected, 5, what="every node to reject the stale command")
    for node in nodes:
        assert found[node.node_id].extra["id"] == stale_ids[node.node_id]
        assert int(found[node.node_id].extra["highest_epoch"]) >= successor.epoch
        # never reached a master (the new leader's own commands, such as the capacity
        # it restores while the paused node is declared dead, do)
        assert stale_ids[node.node_id] not in [c["id"] for c in node.commands()]


def test_redis_stopped_10s_agents_survive_step_down_and_recover(redis_farm, fake_nodes,
                                                                 cluster_name):
    redis = redis_farm.server()
    nodes, store, leader, lease = start_cluster(fake_nodes, redis.url, cluster_name)
    start = time.monotonic()
    redis.signal(signal.SIGSTOP)
    try:
        step_down = "stepping down from epoch"
        wait_until(lambda: step_down in leader.log(), 6, interval=0.05,
                   what="the leader to step down on its deadline")
        stepped = time.monotonic() - start
        report("Redis stopped -> leader stepped down locally", stepped)
        assert stepped < 5.0  # its lease (6 s from a renewal at most 1 s old) still held
        remaining = 10.0 - (time.monotonic() - start)
        time.sleep(max(0.0, remaining))
        assert all(n.agent_alive() for n in nodes)
    finally:
        redis.signal(signal.SIGCONT)
    resumed = time.monotonic()

    def recovered():
        snap, records = store.nodes(TTL_MS)
        ready = [r for r in records if r.alive and r.info.state.value == "ready"]
        return snap.lease is not None and len(ready) == 3 and snap.lease
    wait_until(recovered, 15, what="recovery after Redis returned")
    report("Redis back -> leader and 3 live nodes", time.monotonic() - resumed)
    time.sleep(3.5)  # a full node TTL under the new leader: nobody is declared dead
    assert [e for e in store.read_events() if e.kind == ev.NODE_DEAD] == []
    for node in nodes:
        log = node.log()
        assert "cannot read the cluster" in log or "failed" in log
        # back-off, not a hot loop: ten seconds of outage cost a bounded number of tries
        assert log.count("cannot read the cluster") < 30, node.node_id
        assert "Traceback" not in log


def test_ten_agents_at_once_one_leader_at_most_two_epochs(redis_farm, fake_nodes, cluster_name):
    redis = redis_farm.server()
    nodes = [fake_nodes(redis.url, cluster_name, f"m{i}") for i in range(10)]
    store = observer(redis.url, cluster_name)

    def settled():
        snap, records = store.nodes(TTL_MS)
        return snap.lease is not None and sum(r.alive for r in records) == 10 and snap
    snap = wait_until(settled, 20, what="ten nodes and a leader")
    time.sleep(1.0)
    final = store.snapshot()
    assert final.lease == snap.lease and final.epoch <= 2
    elected = [e for e in store.read_events() if e.kind == ev.LEADER_ELECTED]
    assert len(elected) == final.epoch <= 2
    leaders = [n.node_id for n in nodes if "elected leader" in n.log()]
    assert len(leaders) == len(elected)


def test_new_incarnation_supersedes_the_old_masters_agent(redis_farm, fake_nodes, cluster_name):
    """A node re-started by an upgrade registers a higher incarnation; the old master's
    agent resigns and can no longer act for the node."""
    redis = redis_farm.server()
    old = fake_nodes(redis.url, cluster_name, "n1")
    store = observer(redis.url, cluster_name)
    wait_until(lambda: store.snapshot().lease, 10, what="n1 to lead")
    new = fake_nodes(redis.url, cluster_name, "n1")  # the upgraded generation, same node id
    wait_until(lambda: "acts for nothing from now on" in old.log(), 5,
               what="the old agent to see it is superseded")

    def new_leads():
        snap = store.snapshot()
        return snap.lease if snap.lease and snap.epoch >= 2 else None
    lease = wait_until(new_leads, 10, what="the new incarnation to lead")
    record = store.nodes(TTL_MS)[1][0]
    assert record.incarnation == 2 and record.info.pid == new.master_pid
    kinds = [(e.kind, e.extra.get("incarnation")) for e in store.read_events()]
    assert (ev.NODE_SUPERSEDED, "1") in kinds
    # the old incarnation's lease (epoch 1) was given back, whichever agent saw it first
    assert [e.epoch for e in store.read_events() if e.kind == ev.LEADER_RESIGNED] == [1]
    time.sleep(1.5)  # the old agent has stopped heartbeating: the hash stays the new one's
    assert store.nodes(TTL_MS)[1][0].info.pid == new.master_pid
    for incarnation in (1, 2):
        assert store.send_command(lease, NodeCommand("n1", incarnation, lease.epoch, "reload"))
    wait_until(lambda: new.commands(), 5, what="the new master to get its command")
    time.sleep(1.0)
    assert old.commands() == []  # the old agent acts for nothing
    assert [c["cmd"] for c in new.commands()] == ["reload"]


def test_draining_leader_resigns_and_rejoins_as_follower(redis_farm, fake_nodes, cluster_name):
    redis = redis_farm.server()
    nodes, store, leader, lease = start_cluster(fake_nodes, redis.url, cluster_name)
    start = time.monotonic()
    leader.set_state("draining")

    def new_leader():
        snap = store.snapshot()
        return snap.lease if snap.lease and snap.lease.holder != leader.node_id else None
    wait_until(new_leader, 5, interval=0.02, what="a new leader after draining")
    report("leader draining -> new leader", time.monotonic() - start)
    events = [(e.kind, e.node, e.reason) for e in store.read_events()]
    assert (ev.LEADER_RESIGNED, leader.node_id, "node is draining") in events
    assert (ev.NODE_DRAINING, leader.node_id, "state changed") in events
    leader.set_state("ready")
    wait_until(lambda: f"following {store.snapshot().lease.holder}" in leader.log(), 5,
               what="the drained node to follow")
