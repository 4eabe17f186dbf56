"""The cluster's events as statsd counters: three real nodes with --redis and
--statsd-host; each election and each node death is counted once, by the leader."""

from __future__ import annotations

import time

import pytest
from polycorn.ha import events as ev
from support.procs import free_port, kill_all, wait_until
from support.statsd import StatsdReceiver
from test_agent import TTL_MS, observer

pytestmark = pytest.mark.slow


def test_leader_changed_and_node_dead_are_counted_once(redis_farm, polycorn, cluster_name):
    url = redis_farm.server().url
    with StatsdReceiver() as receiver:
        ports = [free_port() for _ in range(3)]
        nodes = [polycorn("-b", f"127.0.0.1:{port}", "-w", "1", "--redis", url, "--cluster",
                          cluster_name, "--node-id", f"p{i + 1}", "--statsd-host",
                          receiver.address, "--statsd-prefix", "prod", "hello:application",
                          wait_port=port)
                 for i, port in enumerate(ports)]
        store = observer(url, cluster_name)

        def settled():
            snap, records = store.nodes(TTL_MS)
            ready = [r for r in records if r.alive and r.info.state.value == "ready"]
            return snap.lease is not None and len(ready) == 3 and snap
        lease = wait_until(settled, 20, what="3 ready nodes and a leader").lease
        assert receiver.wait_total("prod.polycorn.leader_changed", 1) == 1
        leader = nodes[int(lease.holder[1:]) - 1]
        kill_all([leader.pid, *leader.track()])
        wait_until(lambda: any(e.kind == ev.NODE_DEAD for e in store.read_events()), 15,
                   what="node_dead")
        assert receiver.wait_total("prod.polycorn.node_dead", 1) == 1
        assert receiver.wait_total("prod.polycorn.leader_changed", 2) == 2
        time.sleep(0.5)  # a second count of either would arrive by now
        assert receiver.total("prod.polycorn.node_dead") == 1
        assert receiver.total("prod.polycorn.leader_changed") == 2
