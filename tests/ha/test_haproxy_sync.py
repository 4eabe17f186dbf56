"""The sync's loop (ha/haproxy/sync.py) against a real HAProxy, with the registry in a
MemoryStore on a clock the test moves: what it sends, what it logs (once), what it
saves, and how it takes a HAProxy restart, an unreachable HAProxy and a node whose
name does not resolve."""

from __future__ import annotations

import logging
import os

import pytest
from frontsupport import BACKEND, HAProxyProc
from polycorn.ha.haproxy.feed import RegistryFeed
from polycorn.ha.haproxy.servers import Admin, parse_servers_state
from polycorn.ha.haproxy.sync import Sync
from polycorn.ha.memory_store import MemoryStore
from polycorn.ha.registry import NodeInfo, NodeState
from polycorn.ha.timing import Timing
from support.procs import wait_until

TTL_MS = 3000


@pytest.fixture
def haproxy(tmp_path):
    h = HAProxyProc(tmp_path, "redis://127.0.0.1:1/0", "unit", slots=3)
    yield h
    h.stop()


class World:
    def __init__(self, haproxy: HAProxyProc) -> None:
        self.now = [1_000_000]
        self.store = MemoryStore(clock=lambda: self.now[0])
        self.haproxy = haproxy
        self.feed = RegistryFeed(self.store, TTL_MS)
        self.sync = Sync(haproxy.api, self.feed, BACKEND, Timing(), haproxy.state_file)
        self.incarnations: dict[str, int] = {}

    def join(self, node_id: str, address: str, state: NodeState = NodeState.READY,
             workers: int = 2) -> None:
        info = NodeInfo(node_id, "host", address, 100, "r1", state, workers, 2, 4, 2)
        if node_id in self.incarnations:
            self.store.heartbeat(info, self.incarnations[node_id], TTL_MS)
        else:
            self.incarnations[node_id] = self.store.register(info, TTL_MS)

    def cycle(self):
        assert self.feed.refresh()
        return self.sync.cycle()

    def admin(self) -> dict[str, tuple[Admin, int]]:
        return {s.name: (s.admin, s.port) for s in self.haproxy.servers().values()}


@pytest.fixture
def world(haproxy):
    return World(haproxy)


def test_a_cycle_fills_the_slots_saves_the_state_and_the_next_one_sends_nothing(world, caplog):
    caplog.set_level(logging.INFO, "polycorn.haproxy")
    world.join("n1", "127.0.0.1:18001")
    world.join("n2", "localhost:18002", NodeState.BOOTING, workers=0)
    plan = world.cycle()
    assert len(plan.commands) == 4
    assert world.admin() == {"s1": (Admin.READY, 18001), "s2": (Admin.MAINT, 18002),
                             "s3": (Admin.MAINT, 1)}
    assert "n1 slot s1: maint - weight 1 -> ready 127.0.0.1:18001 weight 2 (registry: " \
           "ready, 2 workers)" in caplog.text
    # The state file is HAProxy's own format, for every backend.
    saved = open(world.haproxy.state_file).read()
    assert parse_servers_state(saved, BACKEND)[0].port == 18001
    assert world.cycle().commands == ()


def test_a_restarted_haproxy_is_noticed_and_gets_everything_back(world, caplog):
    world.join("n1", "127.0.0.1:18001")
    world.join("n2", "127.0.0.1:18002")
    world.cycle()
    before = world.admin()
    world.haproxy.kill()
    os.unlink(world.haproxy.state_file)
    caplog.set_level(logging.INFO, "polycorn.haproxy")
    assert world.cycle() is None  # HAProxy is gone: nothing to do, one warning
    assert world.cycle() is None
    assert caplog.text.count("HAProxy runtime API") == 1
    world.haproxy.start()
    assert world.admin()["s1"] == (Admin.MAINT, 1)
    plan = world.cycle()
    assert len(plan.commands) == 6 and world.admin() == before
    assert "HAProxy answers again" in caplog.text
    assert "HAProxy restarted or reloaded" in caplog.text
    assert os.path.exists(world.haproxy.state_file)


def test_a_name_that_does_not_resolve_is_left_out_and_said_once(world, caplog):
    caplog.set_level(logging.INFO, "polycorn.haproxy")
    world.join("n1", "no-such-host.invalid:18001")
    world.join("n2", "127.0.0.1:18002")
    for _ in range(3):
        world.cycle()
    assert world.admin()["s1"] == (Admin.READY, 18002)
    lines = [r.message for r in caplog.records if "n1 left out" in r.message]
    assert len(lines) == 1 and "does not resolve" in lines[0]


def test_a_mass_lapse_is_held_logged_once_and_released_when_the_nodes_heartbeat(world,
                                                                                  caplog):
    for n in ("n1", "n2", "n3"):
        world.join(n, f"127.0.0.1:1800{n[1]}")
    world.cycle()
    caplog.set_level(logging.INFO, "polycorn.haproxy")
    world.now[0] += TTL_MS + 500  # every heartbeat lapses at once
    for _ in range(3):
        assert world.cycle().commands == ()
    assert caplog.text.count("taking no lapsed node out: 3 of 3 nodes look dead") == 1
    for n in ("n1", "n2", "n3"):
        world.join(n, f"127.0.0.1:1800{n[1]}")
    assert world.cycle().commands == ()
    # n3 alone stays silent: believed, and out once HAProxy's own checks no longer see
    # it up (nothing listens there; a node that answers them would stay in)
    world.now[0] += TTL_MS + 500
    world.join("n1", "127.0.0.1:18001")
    world.join("n2", "127.0.0.1:18002")
    wait_until(lambda: world.haproxy.servers()["s3"].op == "down", 10,
               what="HAProxy's checks to see s3 down")
    assert world.cycle().commands == ("set server polycorn/s3 state maint",)
    assert "n3 slot s3: ready 127.0.0.1:18003 weight 2 -> maint" in caplog.text


def test_a_reloaded_haproxy_keeps_its_slots_from_the_state_file(tmp_path, caplog):
    """systemd's reload: USR2 to the master (-W); the new worker starts from the state
    file the sync saved, so no slot is ever disabled; the sync notices the new pid."""
    h = HAProxyProc(tmp_path, "redis://127.0.0.1:1/0", "reload", slots=2, master_worker=True)
    try:
        world = World(h)
        world.join("n1", "127.0.0.1:18001")
        world.join("n2", "127.0.0.1:18002", NodeState.READY, workers=3)
        world.cycle()
        def slots():  # (the checks' up/down comes and goes: nothing listens there)
            return {n: (s.admin, s.endpoint, s.weight) for n, s in h.servers().items()}
        before = slots()
        h.reload()
        assert slots() == before
        caplog.set_level(logging.INFO, "polycorn.haproxy")
        assert world.cycle().commands == ()
        assert "HAProxy restarted or reloaded" in caplog.text
    finally:
        h.stop()
