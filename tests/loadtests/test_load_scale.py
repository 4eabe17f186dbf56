"""The scale harness (loadtests/scale.py): many real agents per process against a real
redis-server, and what a node's cycle costs Redis as the cluster grows."""

from __future__ import annotations

import time

import pytest
from polycorn.ha.keys import ClusterKeys
from polycorn.ha.process_tracker import ProcessTracker
from polycorn.ha.redis_client import make_client
from polycorn.ha.redis_launcher import RedisServer, client
from polycorn.ha.redis_store import RedisStore
from polycorn.ha.registry import NodeInfo, NodeState

from loadtests import scale
from loadtests.scale_host import Host, node_config


@pytest.fixture
def redis_server(tmp_path):
    tracker = ProcessTracker()
    yield RedisServer(tracker, tmp_path).start()
    tracker.kill_all()


def _followers_cost(server: RedisServer, cluster: str, n: int, seconds: float
                    ) -> tuple[float, float]:
    """Host n real agents that all follow a leader elsewhere; Redis' output bytes and
    read events (requests: one per round trip) per agent cycle over `seconds` of their
    steady state (INFO stats of the real server)."""
    r, url = client(server.port), server.url
    # A lease held by a node outside this process: every hosted agent follows it, so
    # what they cost Redis is a follower's cycle and its heartbeats, nothing else.
    keys = ClusterKeys(cluster)
    r.set(keys.lease, "7:elsewhere", px=120_000)
    r.set(keys.epoch, 7)
    host = Host([node_config(url, cluster, f"f{i:02d}") for i in range(n)])
    try:
        host.run(until=time.monotonic() + 2.0)  # registered, past the joins
        assert r.zcard(keys.members) == n
        before = r.info("stats")
        host.cycles = 0
        host.run(until=time.monotonic() + seconds)
        after = r.info("stats")
        assert host.cycles > n * seconds, "the followers did not cycle"
        return tuple((after[k] - before[k]) / host.cycles
                     for k in ("total_net_output_bytes", "total_reads_processed"))
    finally:
        host.close()


def test_a_followers_cycle_is_one_round_trip_of_the_same_size_at_any_cluster_size(
        redis_server):
    """Every agent reads the election snapshot each cycle (about 3 times a second). It
    used to carry the whole members set, so each follower's reads grew with N and the
    cluster's with N squared; the lease, the epoch and the time are all it needs. The
    inbox's LPOP was a second round trip of every cycle; it rides along now."""
    small, _ = _followers_cost(redis_server, "small", 4, 3.0)
    large, reads = _followers_cost(redis_server, "large", 32, 3.0)
    # Before: ~270 bytes at 4 nodes, ~1100 at 32 (30 bytes per member per snapshot).
    assert large < 1.5 * small, f"{small:.0f} bytes/cycle at 4 nodes, {large:.0f} at 32"
    # One request per cycle plus a heartbeat a second (~0.37 per cycle): 1.33 measured;
    # 2.32 with the LPOP apart.
    assert reads < 1.7, f"{reads:.2f} requests per follower cycle"


def _leader_read_cost(server: RedisServer, cluster: str, n: int, reads: int = 20
                      ) -> tuple[float, float]:
    """Register n nodes, then read the leader's ClusterState `reads` times: Redis' input
    bytes per read (what the leader sends) and this process' CPU seconds per read."""
    config = node_config(server.url, cluster, "leader")
    store = RedisStore(make_client(config.target, config.timing), cluster)
    r = client(server.port)
    try:
        for i in range(n):
            store.register(NodeInfo(f"n{i:03d}", "host", "127.0.0.1:1", 1, "r1",
                                    NodeState.READY, 2, 2, 4, 2, time.time()), 60_000)
        assert len(store.cluster_state(3000).records) == n
        in0, cpu0 = r.info("stats")["total_net_input_bytes"], time.process_time()
        for _ in range(reads):
            store.cluster_state(3000)
        cpu = (time.process_time() - cpu0) / reads
        return (r.info("stats")["total_net_input_bytes"] - in0) / reads, cpu
    finally:
        store.close()


def test_the_leaders_read_of_the_cluster_is_one_command_at_any_size(redis_server):
    """The leader reads every registration each duty cycle (four times a second). As a
    pipeline of one HGETALL per node it sent N commands and parsed 24 reply elements
    per node in Python (21 ms of CPU a read at 200 nodes); one script returns one JSON
    string per node (5 ms)."""
    small, _ = _leader_read_cost(redis_server, "few", 5)
    large, cpu = _leader_read_cost(redis_server, "many", 200)
    # Before: 825 bytes at 5 nodes, 10412 at 200 (one HGETALL each); after: ~410 and ~430.
    assert large < small + 200, f"{small:.0f} bytes sent per read at 5 nodes, {large:.0f} at 200"
    # Before: 0.10 ms of CPU per node (20.8 ms a read); after: 0.027 ms (5.4 ms).
    assert cpu / 200 < 0.06e-3, f"{cpu * 1000:.1f} ms of CPU per read of 200 nodes"


def test_scale_harness_measures_ten_nodes(tmp_path):
    result = scale.run_size(10, tmp_path, per_host=5, window=3.0, log=lambda _: None)
    assert result["nodes"] == 10 and result["hosts"] == 3
    assert result["leader_cycle_ms"]["count"] >= 8  # a duty cycle every 0.25 s
    assert result["leader_parts_ms"]["cluster_state"]["count"] >= 8
    assert result["redis"]["cmds_per_s"] > 10 * 3  # ten nodes, each cycling several times/s
    assert result["redis"]["memory_bytes"] > 0
    assert 0 < result["event_lag_ms"]["p50"] < 200
    detection = result["detection"]
    # Declared once its registration lapsed (the TTL), within a duty interval or two
    # plus a busy machine's slack; never before.
    assert detection["ttl_s"] <= detection["after_last_heartbeat_s"] < detection["ttl_s"] + 2.0
    assert "| 10 |" in scale.table([result])


@pytest.mark.slow
def test_scale_harness_at_two_hundred_nodes(tmp_path):
    result = scale.run_size(200, tmp_path, per_host=50, window=10.0, cut_off=0.5,
                            log=lambda _: None)
    assert result["hosts"] == 5
    detection = result["detection"]
    assert detection["ttl_s"] <= detection["after_last_heartbeat_s"] < detection["ttl_s"] + 2.0
    # CPU time, not wall time: the machine's other load does not count. Before the two
    # fixes the leader's cycle took 22 ms of CPU here and a follower's 2.2 ms (the
    # follower hosts saturated: half their cycles late by 0.4 s); after, 6 and 0.66 ms.
    assert result["leader_cycle_cpu_ms"]["p50"] < 12
    assert result["follower_hosts"]["cpu_ms_per_cycle"] < 1.2
    # Two hosts (100 of the 198 live followers) cut off at once: however the mass-lapse
    # guard paced it, a silence of 3 node TTLs is believed, so 4 TTLs on all are dead.
    cut = result["cut_off"]
    assert cut["silenced"] == 100 and cut["declared_dead"] == 100
