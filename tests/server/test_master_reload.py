"""Reload (HUP) on a fake OS: the new generation serves only when ready, else it is killed."""

from __future__ import annotations

import signal

from polycorn.server.config.loader import load_config
from polycorn.server.exitcodes import WORKER_BOOT_ERROR
from polycorn.server.liveness import WorkerState
from polycorn.server.master.state import MasterState
from support.fake_system import boot, make_master, mark_ready, turns


def hup(master) -> list[int]:
    """HUP; the new generation's pids."""
    master.loop.enqueue(signal.SIGHUP)
    turns(master)
    assert master.lifecycle.state is MasterState.RELOADING
    return sorted(r.pid for r in master.pool.live(master.pool.candidate))


def test_a_ready_new_generation_replaces_the_old_one(system):
    master = make_master(system)
    old = boot(master)
    new = hup(master)
    assert len(new) == 2 and not set(new) & set(old)
    turns(master, 3)  # not ready yet: the old workers keep serving
    assert system.sent(signal.SIGTERM) == [] and master.pool.generation == 0
    mark_ready(master, generation=1)
    turns(master)
    assert master.lifecycle.state is MasterState.READY
    assert sorted(system.sent(signal.SIGTERM)) == old
    assert master.pool.generation == 1 and sorted(r.pid for r in master.pool.live()) == new
    assert system.titles[-1][0] == "master"  # a HUP may bring a new --name


def test_a_fresh_configuration_brings_its_worker_count(system):
    fresh = load_config(["-w", "3", "testapp:application"], {})
    master = make_master(system, reload_config=lambda: fresh)
    boot(master)
    assert len(hup(master)) == 3
    mark_ready(master, generation=1)
    turns(master)
    assert master.cfg is fresh and master.num_workers == 3
    assert master.config.previous is None


def test_a_generation_not_ready_in_time_is_killed_and_the_old_config_kept(system):
    # The deadline is the new configuration's --upgrade-timeout.
    fresh = load_config(["-w", "2", "--upgrade-timeout", "5", "testapp:application"], {})
    master = make_master(system, reload_config=lambda: fresh)
    old = boot(master)
    original = master.cfg
    new = hup(master)
    system.advance(6)
    turns(master)
    assert master.lifecycle.state is MasterState.READY
    assert sorted(system.sent(signal.SIGKILL)) == new
    assert master.cfg is original and master.pool.candidate is None
    assert sorted(r.pid for r in master.pool.live()) == old


def test_a_new_worker_that_fails_to_boot_aborts_the_reload(system):
    master = make_master(system)
    old = boot(master)
    new = hup(master)
    master.slots.set_state(master.pool.workers[new[0]].slot, WorkerState.BOOT_FAILED, "ImportError")
    system.exit(new[0], WORKER_BOOT_ERROR)
    turns(master)
    assert master.lifecycle.state is MasterState.READY
    assert system.sent(signal.SIGKILL) == [new[1]]  # the other new one; the dead one is gone
    assert sorted(r.pid for r in master.pool.live()) == old


def test_a_killed_new_worker_is_replaced_during_the_reload(system):
    master = make_master(system)
    boot(master)
    new = hup(master)
    mark_ready(master, generation=1)
    system.die(new[0], signal.SIGKILL)
    turns(master)
    assert master.lifecycle.state is MasterState.RELOADING
    assert len(master.pool.live(1)) == 2 and system.forks[-1] not in new


def test_a_hup_while_booting_waits_for_ready(system):
    master = make_master(system)
    turns(master)
    master.loop.enqueue(signal.SIGHUP)
    turns(master)
    assert master.lifecycle.state is MasterState.BOOTING and len(system.forks) == 2
    mark_ready(master)
    turns(master)
    assert master.lifecycle.state is MasterState.RELOADING and len(system.forks) == 4
