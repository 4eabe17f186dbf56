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
