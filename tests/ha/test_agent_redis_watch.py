"""An agent elected just after a Redis failover holds its duties off as a leader that led
through it would: every agent watches Redis' run id in its cycle read, leader or not.

chaos --random 4 (90 s, --netns --front haproxy) found it: a SENTINEL FAILOVER 5 s after
a healed split promoted the old primary, which Sentinel had not yet made a replica (it
waits 8 s before converting a returning old master), so its data was from before the
split. A node that had only followed until then won the lease on it at once and declared
n3 dead, 'no heartbeat for 11.4s', 2.6 s after n3's heartbeat on the other primary.

A real socketpair, the in-memory store (the same contract as Redis) and a fake clock.
"""

from __future__ import annotations

import socket

import pytest
from polycorn.ha.agent import Agent
from polycorn.ha.memory_store import MemoryStore
from polycorn.ha.redis_url import parse_redis_url
from polycorn.ha.registry import NodeInfo, NodeState
from polycorn.ha.settings import ClusterConfig
from polycorn.ha.timing import Timing
from polycorn.server.sidecar import Channel

TTL_MS = 3000


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def ms(self) -> int:
        return int(self.t * 1000)


@pytest.fixture
def world():
    clock = Clock()
    store = MemoryStore(clock.ms)
    ours, theirs = socket.socketpair()
    config = ClusterConfig("c", "redis://127.0.0.1:1/0", parse_redis_url("redis://127.0.0.1:1/0"),
                           "n2", "r1", None, Timing())
    agent = Agent(config, Channel(ours), store, clock=clock)
    agent.info = agent.info.evolve(state=NodeState.READY, workers=2, workers_configured=2,
                                   workers_target=2, max_workers=4)
    yield clock, store, agent
    ours.close(), theirs.close()


def run_until(clock: Clock, agent: Agent, until: float, step: float = 0.05) -> None:
    while clock.t < until:
        clock.t = round(clock.t + step, 3)
        agent.cycle()


def test_a_node_elected_just_after_a_failover_does_not_judge_the_new_primary_at_once(world):
    clock, store, agent = world
    n3 = NodeInfo("n3", "h", "127.0.0.1:8003", 1003, "r1", NodeState.READY, 2, 2, 4, 2)
    store.heartbeat(n3, store.register(n3, TTL_MS), TTL_MS)
    assert store.acquire_lease("n1", 6000, "the leader before", 0) == 1  # never renewed
    run_until(clock, agent, 105.0)  # n2 follows; n3 falls silent (its record lapses at 103)
    assert not agent.election.is_leader(clock.t)
    store.server_id = "memory-2"  # the failover: what this Redis holds is seconds old
    run_until(clock, agent, 107.0)  # n1's lease expires at 106: n2 wins it
    assert agent.election.is_leader(clock.t)
    assert store.cluster_state(TTL_MS).dead == {}, "declared on the new primary's old data"
    assert agent.duties.hold is not None and agent.duties.hold.cause.value == "redis_changed"
    # The hold is bounded: once the recovery grace has passed, a node still silent is dead.
    run_until(clock, agent, 105.0 + Timing().recovery_grace + 0.5)
    assert "n3" in store.cluster_state(TTL_MS).dead
