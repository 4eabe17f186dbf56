"""The agent logs a routine decision once per topic, told by its Decision, not its words.

A real socketpair and the in-memory store: no master, no Redis (the agent's log
policy is all that runs here).
"""

from __future__ import annotations

import logging
import socket

import pytest
from polycorn.ha.agent import Agent
from polycorn.ha.decision import Decision
from polycorn.ha.memory_store import MemoryStore
from polycorn.ha.redis_url import parse_redis_url
from polycorn.ha.settings import ClusterConfig
from polycorn.ha.timing import Timing
from polycorn.server.sidecar import Channel


@pytest.fixture
def agent():
    ours, theirs = socket.socketpair()
    config = ClusterConfig("c", "redis://127.0.0.1:1/0", parse_redis_url("redis://127.0.0.1:1/0"),
                           "n1", "r1", None, Timing())
    yield Agent(config, Channel(ours), MemoryStore())
    ours.close(), theirs.close()


def info_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]


def test_a_routine_topic_is_logged_once_until_a_real_decision(agent, caplog):
    caplog.set_level(logging.DEBUG, "polycorn.error.cluster")
    renewed = Decision("renewed epoch 1, deadline +4.0s", "renewed epoch 1")
    agent._say(renewed)
    agent._say(Decision("renewed epoch 1, deadline +3.9s", "renewed epoch 1"))
    # a sentence that merely starts like a routine one is a real decision now
    agent._say(Decision("no action taken on n2: the store refused"))
    agent._say(renewed)
    agent._say("registered as n1 incarnation 1")  # the agent's own sentences are real
    assert info_lines(caplog) == [
        "cluster: renewed epoch 1, deadline +4.0s",
        "cluster: no action taken on n2: the store refused",
        "cluster: renewed epoch 1, deadline +4.0s",
        "cluster: registered as n1 incarnation 1"]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG] == [
        "cluster: renewed epoch 1, deadline +3.9s"]
