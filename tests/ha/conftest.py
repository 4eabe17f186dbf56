"""Fixtures for the cluster-layer tests: private Redis servers, unique cluster names."""

from __future__ import annotations

import itertools
import os

import pytest
from hasupport import RedisFarm

_names = itertools.count()


@pytest.fixture
def redis_farm(tmp_path):
    farm = RedisFarm(tmp_path)
    yield farm
    farm.stop()


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory):
    """One server for a module's tests; each test uses its own cluster name."""
    farm = RedisFarm(tmp_path_factory.mktemp("redis"))
    yield farm.server()
    farm.stop()


@pytest.fixture
def cluster_name() -> str:
    return f"t{os.getpid()}-{next(_names)}"


@pytest.fixture
def fake_nodes(tmp_path):
    """Start fake-master nodes (real agents); every process is killed by pid afterwards."""
    from hasupport import FakeNode

    started: list[FakeNode] = []

    def start(redis_url: str, cluster: str, node_id: str, **kw) -> FakeNode:
        node = FakeNode(tmp_path, redis_url, cluster, node_id, **kw)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture
def cluster(redis_farm, polycorn, cluster_name, tmp_path):
    """Real nodes p1, p2, p3 on release r1 of a Capistrano-style site, ready with two
    workers each and a leader (polysupport.py); all killed by pid afterwards."""
    from polysupport import Cluster, Site

    site = Site(tmp_path / "site")
    site.release("r1")
    site.switch("r1")
    c = Cluster(redis_farm.server().url, cluster_name, site, polycorn)
    for node_id in ("p1", "p2", "p3"):
        c.start(node_id)
    c.ready()
    return c
