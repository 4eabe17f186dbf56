"""Three real polycorn masters with --redis: the plug-in, the sidecar slot and the agent
together. HTTP keeps being served whatever Redis does (0 failed requests)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from polycorn.ha import events as ev
from polycorn.ha.store import StoreUnavailable
from support.load import Load
from support.procs import free_port, kill_all, wait_until
from test_agent import TTL_MS, ctl, observer, report

pytestmark = pytest.mark.slow


def start_nodes(polycorn, url: str, cluster: str, n: int = 3):
    ports = [free_port() for _ in range(n)]
    nodes = [polycorn("-b", f"127.0.0.1:{port}", "-w", "2", "--redis", url, "--cluster", cluster,
                      "--node-id", f"p{i + 1}", "--release", "rel-7", "hello:application",
                      wait_port=port)
             for i, port in enumerate(ports)]
    store = observer(url, cluster)

    def settled():
        snap, records = store.nodes(TTL_MS)
        ready = [r for r in records if r.alive and r.info.state.value == "ready"
                 and r.info.workers == 2]
        return snap.lease is not None and len(ready) == n and snap
    snap = wait_until(settled, 20, what=f"{n} ready polycorn nodes and a leader")
    by_id = {f"p{i + 1}": node for i, node in enumerate(nodes)}
    return nodes, ports, store, by_id[snap.lease.holder], snap.lease


def test_three_real_nodes_status_json(redis_farm, polycorn, cluster_name):
    redis = redis_farm.server()
    nodes, ports, store, leader, lease = start_nodes(polycorn, redis.url, cluster_name)
    done = ctl("status", "--json", "--redis", redis.url, "--cluster", cluster_name)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["leader"] == lease.holder and status["epoch"] == lease.epoch
    by_id = {n["node_id"]: n for n in status["nodes"]}
    assert sorted(by_id) == ["p1", "p2", "p3"]
    for i, node_id in enumerate(["p1", "p2", "p3"]):
        n = by_id[node_id]
        assert (n["state"], n["release"], n["workers"], n["workers_configured"]) == \
            ("ready", "rel-7", 2, 2)
        assert n["pid"] == nodes[i].pid and n["address"] == f"127.0.0.1:{ports[i]}"
        assert n["max_workers"] >= 2 and 0 <= n["heartbeat_age"] < 3


def test_graceful_stop_resigns_and_leaves(redis_farm, polycorn, cluster_name):
    redis = redis_farm.server()
    nodes, ports, store, leader, lease = start_nodes(polycorn, redis.url, cluster_name)
    start = time.monotonic()
    leader.signal(signal.SIGTERM)

    def new_leader():
        snap = store.snapshot()
        return snap.lease if snap.lease and snap.lease.holder != lease.holder else None
    wait_until(new_leader, 5, interval=0.02, what="a new leader after a graceful stop")
    report("graceful stop of the leader -> new leader", time.monotonic() - start)
    wait_until(lambda: any(e.kind == ev.NODE_GONE and e.node == lease.holder
                           for e in store.read_events()), 10, what="node_gone")
    kinds = [e.kind for e in store.read_events() if e.node == lease.holder]
    assert ev.LEADER_RESIGNED in kinds and ev.NODE_DEAD not in kinds


def test_kill_9_of_the_leaders_master_only(redis_farm, polycorn, cluster_name):
    redis = redis_farm.server()
    nodes, ports, store, leader, lease = start_nodes(polycorn, redis.url, cluster_name)
    leader.track()
    start = time.monotonic()
    os.kill(leader.pid, signal.SIGKILL)

    def new_leader():
        snap = store.snapshot()
        return snap.lease if snap.lease and snap.lease.holder != lease.holder else None
    successor = wait_until(new_leader, 5, interval=0.01, what="a new leader")
    took = time.monotonic() - start
    report("real master killed -> new leader", took)
    assert took < 1.0 and successor.epoch > lease.epoch
    gone = [e for e in store.read_events() if e.kind == ev.NODE_GONE]
    assert [e.node for e in gone] == [lease.holder]


def test_kill_9_of_the_leaders_whole_node(redis_farm, polycorn, cluster_name):
    redis = redis_farm.server()
    nodes, ports, store, leader, lease = start_nodes(polycorn, redis.url, cluster_name)
    others = [p for p, n in zip(ports, nodes, strict=True) if n is not leader]
    with Load(others, path="/", threads=2) as load:
        load.wait_requests(50)
        start = time.monotonic()
        kill_all([leader.pid, *leader.track()])

        def new_leader():
            snap = store.snapshot()
            return snap.lease if snap.lease and snap.lease.holder != lease.holder else None
        successor = wait_until(new_leader, 10, interval=0.05, what="a new leader")
        elected = time.monotonic() - start
        wait_until(lambda: any(e.kind == ev.NODE_DEAD for e in store.read_events()), 5,
                   what="node_dead")
        dead = time.monotonic() - start
    result = load.result
    report("real node killed -> new leader", elected)
    report("real node killed -> node_dead event", dead)
    assert elected < 7.0 and successor.epoch > lease.epoch
    assert result.failed == 0, result.summary()


def test_redis_stopped_10s_http_keeps_serving(redis_farm, polycorn, cluster_name):
    redis = redis_farm.server()
    nodes, ports, store, leader, lease = start_nodes(polycorn, redis.url, cluster_name)
    with Load(ports, path="/", threads=3) as load:
        load.wait_requests(50)
        redis.signal(signal.SIGSTOP)
        try:
            time.sleep(10)
            during = load.result.ok
        finally:
            redis.signal(signal.SIGCONT)
        before_resume = time.monotonic()

        def recovered():
            snap, records = store.nodes(TTL_MS)
            ready = [r for r in records if r.alive and r.info.state.value == "ready"]
            return snap.lease is not None and len(ready) == 3
        wait_until(recovered, 15, what="the cluster whole again")
        report("real nodes, Redis back -> whole again", time.monotonic() - before_resume)
        time.sleep(TTL_MS / 1000 + 0.5)
    result = load.result
    print(f"\nLOAD during Redis outage: {result.summary()}")
    assert result.failed == 0, result.summary()
    assert during > 100  # requests really flowed while Redis was stopped
    assert [e for e in store.read_events() if e.kind == ev.NODE_DEAD] == []
    assert all(n.proc.poll() is None for n in nodes)


def test_sentinel_master_killed_under_load(redis_farm, polycorn, cluster_name):
    """kill -9 of the Redis master behind Sentinel: no HTTP error, no false node_dead,
    at most one leader change."""
    group = redis_farm.sentinel_group()
    nodes, ports, store, leader, lease = start_nodes(polycorn, group.url, cluster_name)
    with Load(ports, path="/", threads=3) as load:
        load.wait_requests(50)
        start = time.monotonic()
        group.master.signal(signal.SIGKILL)

        def recovered():
            try:
                snap, records = store.nodes(TTL_MS)
            except StoreUnavailable:  # the observer's own client is failing over too
                return False
            ready = [r for r in records if r.alive and r.info.state.value == "ready"]
            return snap.lease is not None and len(ready) == 3 and snap.lease
        final = wait_until(recovered, 30, interval=0.1, what="the cluster on the new master")
        report("real nodes, Redis master killed -> whole again", time.monotonic() - start)
        time.sleep(TTL_MS / 1000 + 1.5)
    result = load.result
    print(f"\nLOAD during Sentinel failover: {result.summary()}")
    assert result.failed == 0, result.summary()
    events = store.read_events(count=1000)
    assert [e for e in events if e.kind == ev.NODE_DEAD] == []
    assert final.epoch <= lease.epoch + 1  # at most one leader change
