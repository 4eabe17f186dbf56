"""Agents on a Sentinel-managed Redis (master, replica, three sentinels, short timers):
a failover costs no false node_dead and at most one leader change."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from polycorn.ha import events as ev
from polycorn.ha.events import Event
from polycorn.ha.redis_store import FOLLOW_MASTER_EVERY
from polycorn.ha.store import StoreUnavailable
from support.procs import wait_until
from test_agent import TTL_MS, observer, report, start_cluster

pytestmark = pytest.mark.slow


class LeaseWatch:
    """Polls the lease in a thread and remembers every distinct lease seen."""

    def __init__(self, store) -> None:
        self.store = store
        self.seen: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                lease = self.store.snapshot().lease
            except StoreUnavailable:
                continue
            if lease is not None and (not self.seen or self.seen[-1] != lease):
                self.seen.append(lease)

    def stop(self) -> list:
        self._stop.set()
        self._thread.join(5)
        return self.seen


def run_failover(redis_farm, fake_nodes, cluster_name, fault) -> None:
    group = redis_farm.sentinel_group()
    nodes, store, leader, lease = start_cluster(fake_nodes, group.url, cluster_name)
    watch = LeaseWatch(observer(group.url, cluster_name))
    start = time.monotonic()
    fault(group)

    def recovered():
        try:
            snap, records = store.nodes(TTL_MS)
        except StoreUnavailable:
            return False
        ready = [r for r in records if r.alive and r.info.state.value == "ready"]
        return snap.lease is not None and len(ready) == 3
    wait_until(recovered, 30, interval=0.1, what="the cluster back on the new master")
    report("Sentinel fault -> cluster whole again", time.monotonic() - start)
    time.sleep(TTL_MS / 1000 + 1.5)  # long enough for any false node_dead to be declared
    leases = watch.stop()
    events = store.read_events(count=1000)
    assert [e for e in events if e.kind == ev.NODE_DEAD] == []
    assert len(leases) <= 2, f"more than one leader change: {leases}"
    assert all(n.agent_alive() for n in nodes)
    assert len({lease.epoch for lease in leases}) == len(leases)  # each change is a new epoch


def test_sentinel_failover_command(redis_farm, fake_nodes, cluster_name):
    def failover(group):
        report("SENTINEL FAILOVER -> new master named", group.failover())
    run_failover(redis_farm, fake_nodes, cluster_name, failover)


def test_kill_9_of_the_redis_master(redis_farm, fake_nodes, cluster_name):
    def kill_master(group):
        group.master.signal(signal.SIGKILL)
    run_failover(redis_farm, fake_nodes, cluster_name, kill_master)


def test_after_a_failover_writes_follow_the_new_master_within_a_second(redis_farm, cluster_name):
    """Sentinel reconfigures the old master only when it next looks at it (~10 s): until
    then it still takes writes. A store that kept its connection to it must move to the
    new master within FOLLOW_MASTER_EVERY + the Sentinels' switch (chaos --random 1 found
    two leaders with the same epoch, one on each master)."""
    group = redis_farm.sentinel_group()
    store = observer(group.url, cluster_name)
    store.emit(Event("before", "n1"))  # a connection to the first master, kept idle
    old = group.current_master()
    group.failover()  # returns once the Sentinels name the new master
    new = group.current_master()
    assert new.port != old.port
    with old.client() as c:
        assert c.info("replication")["role"] == "master"  # not yet reconfigured
    time.sleep(FOLLOW_MASTER_EVERY + 0.1)
    store.snapshot()
    store.emit(Event("after", "n1"))
    key = store.keys.events
    with new.client() as c:
        kinds = [f["event"] for _, f in c.xrange(key)]
    assert "after" in kinds, f"the write went to the old master (port {old.port}): {kinds}"


def test_after_a_failover_reads_alone_follow_the_new_master_too(redis_farm, cluster_name):
    """The HAProxy sync only reads (cluster_state, the events stream): it kept reading the
    old master, whose data froze at the failover, until Sentinel reconfigured it, and took
    a heartbeating node out as lapsed (chaos --random 19, 90 s, --netns --front haproxy:
    'no heartbeat for 9.3s' of a node that heartbeated every second; 89 HTTP 503)."""
    group = redis_farm.sentinel_group()
    store = observer(group.url, cluster_name)
    store.cluster_state(TTL_MS)  # a connection to the first master, kept idle
    old = group.current_master()
    group.failover()
    new = group.current_master()
    with old.client() as c:
        assert c.info("replication")["role"] == "master"  # not yet reconfigured
    with new.client() as c:
        new_id = c.info("server")["run_id"]
    time.sleep(FOLLOW_MASTER_EVERY + 0.1)
    assert store.cluster_state(TTL_MS).server_id == new_id, "read the old master"
    store.read_events(count=1)
    time.sleep(FOLLOW_MASTER_EVERY + 0.1)
    with old.client() as c:
        c.xadd(store.keys.events, Event("stale", "n1").fields())  # only the old one has it
    assert "stale" not in [e.kind for e in store.latest_events(5)]
