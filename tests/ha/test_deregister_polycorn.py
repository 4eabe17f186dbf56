"""A real node with --redis stopping on TERM: the registry says `stopping` at once (not at
the next heartbeat) and the health path answers 503 for --deregister-delay, while the
node still serves; only then does it drain and leave. What a registry-driven balancer
sync (state `stopping` -> out of the backend) and plain health checks rely on."""

from __future__ import annotations

import signal
import time

from polycorn.ha import events as ev
from polycorn.ha.registry import NodeState
from support.http import get
from support.procs import free_port, wait_until
from test_agent import TTL_MS, observer


def status(port: int, path: str) -> int | None:
    try:
        return get(port, path, timeout=5)[0]
    except OSError:
        return None


def start_node(polycorn, url: str, cluster: str, *extra: str):
    port = free_port()
    node = polycorn("-b", f"127.0.0.1:{port}", "-w", "2", "--redis", url, "--cluster", cluster,
                    "--node-id", "d1", *extra, "hello:application", wait_port=port)
    store = observer(url, cluster)

    def registered_ready():
        records = {r.info.node_id: r for r in store.nodes(TTL_MS)[1]}
        d1 = records.get("d1")
        return d1 is not None and d1.alive and d1.info.state is NodeState.READY
    wait_until(registered_ready, 20, what="d1 ready in the registry")
    return node, port, store


def state_of(store) -> str | None:
    records = {r.info.node_id: r for r in store.nodes(TTL_MS)[1]}
    d1 = records.get("d1")
    return None if d1 is None or not d1.alive else d1.info.state.value


def test_term_says_stopping_in_the_registry_at_once_and_serves_through_the_delay(
        redis_farm, polycorn, cluster_name):
    redis = redis_farm.server()
    # A heartbeat far longer than the window: `stopping` can only come from the agent
    # publishing the state change at once.
    node, port, store = start_node(polycorn, redis.url, cluster_name, "--health-check",
                                   "/health", "--deregister-delay", "3",
                                   "--cluster-heartbeat", "2.5", "--node-ttl", "8")
    node.signal(signal.SIGTERM)
    termed = time.monotonic()
    wait_until(lambda: state_of(store) == "stopping", 5, interval=0.01,
               what="d1 stopping in the registry")
    published = time.monotonic() - termed
    states, health, served = [], [], []
    while time.monotonic() - termed < 2.6:  # inside the 3 s window
        states.append(state_of(store))
        health.append(status(port, "/health"))
        served.append(status(port, "/"))
        time.sleep(0.05)
    print(f"\nFIGURE TERM -> registry says stopping: {published:.3f}s (delay 3 s, "
          f"heartbeat 2.5 s)")
    assert published < 0.5
    assert set(states) == {"stopping"}, states
    assert set(health) == {503} and set(served) == {200}, (health, served)
    node.proc.wait(20)
    assert time.monotonic() - termed >= 2.9
    wait_until(lambda: any(e.kind == ev.NODE_GONE and e.node == "d1"
                           for e in store.read_events()), 10, what="node_gone for d1")
    assert not any(e.kind == ev.NODE_DEAD and e.node == "d1" for e in store.read_events())


def test_a_cluster_node_without_a_health_path_still_takes_the_window(
        redis_farm, polycorn, cluster_name):
    """The registry is an audience of its own: a balancer sync reads `stopping` there."""
    redis = redis_farm.server()
    node, port, store = start_node(polycorn, redis.url, cluster_name, "--deregister-delay", "2")
    node.signal(signal.SIGTERM)
    termed = time.monotonic()
    wait_until(lambda: state_of(store) == "stopping", 5, interval=0.01,
               what="d1 stopping in the registry")
    assert time.monotonic() - termed < 0.5
    assert status(port, "/") == 200  # still serving in the window
    node.proc.wait(20)
    assert time.monotonic() - termed >= 1.9
    assert "out of rotation for 2s before draining" in node.log()


def test_int_leaves_the_registry_without_the_delay(redis_farm, polycorn, cluster_name):
    redis = redis_farm.server()
    node, port, store = start_node(polycorn, redis.url, cluster_name, "--health-check",
                                   "/health", "--deregister-delay", "10")
    node.signal(signal.SIGINT)
    sent = time.monotonic()
    node.proc.wait(15)
    assert time.monotonic() - sent < 5.0
    wait_until(lambda: state_of(store) is None, 5, what="d1 gone from the registry")
