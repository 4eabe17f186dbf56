"""The agent and the master's wire versions: it reads versions 1 and 2, answers in the
master's, and refuses (one log line, no crash) a version it does not know.

A real socketpair and the in-memory store: no master, no Redis.
"""

from __future__ import annotations

import logging
import os
import socket

import pytest
from polycorn.ha.agent import Agent
from polycorn.ha.commands import NodeCommand
from polycorn.ha.memory_store import MemoryStore
from polycorn.ha.redis_url import parse_redis_url
from polycorn.ha.registry import NodeState
from polycorn.ha.settings import ClusterConfig
from polycorn.ha.timing import Timing
from polycorn.server.messages import Hello, State
from polycorn.server.sidecar import Channel


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    config = ClusterConfig("c", "redis://127.0.0.1:1/0", parse_redis_url("redis://127.0.0.1:1/0"),
                           "n1", "r1", None, Timing())
    yield Agent(config, Channel(ours), MemoryStore()), Channel(theirs)
    ours.close(), theirs.close()


def relay(agent: Agent, master: Channel) -> dict:
    """Relay one admitted command through the inbox; what the master reads."""
    agent.inbox.fence.incarnation = 1
    agent.inbox._deliver(NodeCommand("n1", 1, 1, "ttin", 2, id="c1").encode())
    return master.recv(2)


@pytest.mark.parametrize("version", [1, 2])
def test_reads_both_versions_and_commands_in_the_masters(pair, version):
    agent, master = pair
    agent.handle_message(Hello(4242, ("127.0.0.1:8100",), 3, 6).to_wire(version))
    agent.handle_message(State("ready", 3, 3, 3, 6, 4242, "boot").to_wire(version))
    assert (agent.info.pid, agent.info.address, agent.info.state, agent.info.workers,
            agent.info.max_workers) == (4242, "127.0.0.1:8100", NodeState.READY, 3, 6)
    expected = {"type": "command", "id": "c1", "cmd": "ttin", "n": 2}
    assert relay(agent, master) == (expected if version == 1 else {**expected, "version": 2})


def test_an_unknown_version_is_refused_with_one_line_and_the_agent_carries_on(pair, caplog):
    agent, master = pair
    caplog.set_level(logging.WARNING, "polycorn.error.cluster")
    agent.handle_message(Hello(4242, ("127.0.0.1:8100",), 3, 6).to_wire(1))
    agent.handle_message({**State("stopping", 0, 0, 3, 6, 4242).to_wire(2), "version": 99})
    agent.handle_message({"type": "state", "state": "draining", "workers": "two"})
    assert agent.info.state is not NodeState.STOPPING  # neither was applied
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"agent of node n1 (pid {os.getpid()}): refused a 'state' message of wire version 99: "
        "wire version 99 is not one this release reads (1, 2); dropped it; the agent carries on",
        f"agent of node n1 (pid {os.getpid()}): refused a 'state' message of wire version "
        "1 (no version field): state: field 'workers' is str, expected int or null; "
        "dropped it; the agent carries on"]
    # Still reading, still answering in version 1 (the last version it understood).
    agent.handle_message(State("ready", 3, 3, 3, 6, 4242).to_wire(1))
    assert agent.info.state is NodeState.READY
    assert "version" not in relay(agent, master)


def test_the_metrics_endpoint_is_advertised_with_a_wildcard_host_named():
    # the dashboard scrapes requests/s from the address a node advertises (--metrics-bind)
    from polycorn.ha.settings import metrics_address

    assert metrics_address(None) == "" and metrics_address(("::1", 9100)) == "[::1]:9100"
    assert metrics_address(("127.0.0.1", 9100)) == "127.0.0.1:9100"
    assert metrics_address("10.0.0.5:9100") == "10.0.0.5:9100"
    ours, theirs = socket.socketpair()
    try:
        url = "redis://127.0.0.1:1/0"
        for bind, shown in ((("0.0.0.0", 9100), f"{socket.gethostname()}:9100"),
                            (("127.0.0.1", 9101), "127.0.0.1:9101"), (None, "")):
            config = ClusterConfig("c", url, parse_redis_url(url), "n1", "r1", None, Timing(),
                                   metrics_address=metrics_address(bind))
            info = Agent(config, Channel(ours), MemoryStore()).info
            assert info.metrics_address == shown
            assert info.to_hash()["metrics_address"] == shown  # what the registry holds
    finally:
        ours.close(), theirs.close()
