"""The worker pool's bookkeeping on a fake OS: spawn, reap, respawn, timeouts, back-off."""

from __future__ import annotations

import signal

import pytest
from polycorn.server.exitcodes import WORKER_BOOT_ERROR
from polycorn.server.master.pool import EARLY_DEATH, KILL_AFTER_ABORT
from polycorn.server.master.state import HaltServer, MasterState
from support.fake_system import boot, make_master, mark_ready, run_for, turns


def test_boot_spawns_the_count_and_turns_ready_when_every_worker_is(system):
    master = make_master(system, "-w", "3")
    turns(master)
    assert len(system.forks) == 3 and master.lifecycle.state is MasterState.BOOTING
    mark_ready(master)
    turns(master)
    assert master.lifecycle.state is MasterState.READY and master.lifecycle.ever_ready
    assert master.announcer.public_state == "ready"
    assert master.pool.ready_count() == 3


def test_a_reaped_worker_is_respawned_and_its_slot_freed(system):
    master = make_master(system)
    first, second = boot(master)
    run_for(master, system, EARLY_DEATH + 1)  # old enough: no back-off
    slot = master.pool.workers[first].slot
    system.exit(first, 0)  # max-requests recycle
    turns(master)
    assert first not in master.pool.workers
    assert len(master.pool.live()) == 2 and system.forks[-1] not in (first, second)
    assert master.pool.workers[system.forks[-1]].slot == slot  # the freed slot, reused


def test_a_worker_past_its_timeout_gets_abort_then_kill(system):
    master = make_master(system, "--timeout", "10")
    pids = boot(master)
    run_for(master, system, 9)  # heartbeats stand still, but not long enough
    assert system.sent(signal.SIGABRT) == []
    run_for(master, system, 2)
    assert sorted(system.sent(signal.SIGABRT)) == pids
    assert system.sent(signal.SIGKILL) == []
    run_for(master, system, KILL_AFTER_ABORT + 0.5)
    assert sorted(set(system.sent(signal.SIGKILL))) == pids


def test_a_master_that_stood_still_gives_its_workers_a_full_timeout(system):
    master = make_master(system, "--timeout", "10")
    boot(master)
    system.advance(60)  # SIGSTOP of the whole node, then SIGCONT
    turns(master)
    assert system.sent(signal.SIGABRT) == []


def test_early_deaths_back_off_before_the_next_spawn(system):
    master = make_master(system)
    first, _ = boot(master)
    system.exit(first, 1)  # a crash right after boot
    turns(master)
    assert master.pool.early_deaths == 1
    forks = len(system.forks)
    delay = master.pool.respawn_at - system.now
    assert 0 < delay <= 0.2 + 1e-6
    run_for(master, system, delay + 0.5)
    assert len(system.forks) == forks + 1
    # The replacement crashes too, once ready: the back-off doubles.
    mark_ready(master)
    turns(master)
    system.exit(system.forks[-1], 1)
    turns(master)
    assert master.pool.early_deaths == 2
    assert master.pool.respawn_at - system.now == pytest.approx(0.4, abs=0.01)


def test_a_boot_failure_before_ready_halts_with_the_boot_status(system):
    master = make_master(system)
    turns(master)
    system.exit(system.forks[0], WORKER_BOOT_ERROR)
    with pytest.raises(HaltServer) as info:
        turns(master)
    assert info.value.exit_status == WORKER_BOOT_ERROR
    assert "worker failed to boot" in info.value.reason


def test_a_boot_failure_after_ready_is_retried_with_back_off(system):
    master = make_master(system)
    first, _ = boot(master)
    system.exit(first, WORKER_BOOT_ERROR)  # e.g. a --max-requests respawn that cannot import
    turns(master)
    assert master.pool.boot_failures == 1
    assert master.pool.respawn_at - system.now == pytest.approx(1.0, abs=0.01)
    assert master.lifecycle.state is MasterState.READY


def test_an_exited_worker_the_master_retired_is_not_replaced(system):
    master = make_master(system)
    boot(master)
    master.pool.set_num_workers(1)
    turns(master)
    (retired,) = system.sent(signal.SIGTERM)
    system.exit(retired, 0)
    turns(master, 3)
    assert len(master.pool.workers) == 1 and len(system.forks) == 2
