"""Stop sequencing on a fake OS: deregistration window, drain, quick stop, kill after timeout."""

from __future__ import annotations

import signal

from polycorn.server.master.state import MasterState
from support.fake_system import boot, make_master, run_for, turns


def test_term_without_anyone_to_tell_drains_at_once(system):
    master = make_master(system)  # no health path, no sidecar: no window
    workers = boot(master)
    master.loop.enqueue(signal.SIGTERM)
    turns(master)
    assert master.lifecycle.state is MasterState.DRAINING
    assert sorted(system.sent(signal.SIGTERM)) == workers
    assert master.announcer.public_state == "stopping"
    system.exit(workers[0])
    turns(master, 3)
    assert master.lifecycle.state is MasterState.DRAINING and len(system.forks) == 2
    system.exit(workers[1])
    turns(master)
    assert master.lifecycle.state is MasterState.STOPPED


def test_term_leaves_the_rotation_for_the_delay_then_drains(system):
    master = make_master(system, "--health-check", "/health", "--deregister-delay", "2")
    workers = boot(master)
    master.loop.enqueue(signal.SIGTERM)
    turns(master)
    assert master.lifecycle.state is MasterState.DEREGISTERING
    assert master.slots.draining() and master.announcer.public_state == "stopping"
    assert system.sent(signal.SIGTERM) == []  # still serving
    system.exit(workers[0], 1)  # and still kept whole during the window
    run_for(master, system, 1)
    assert len(master.pool.live()) == 2
    run_for(master, system, 1.5)
    assert master.lifecycle.state is MasterState.DRAINING
    assert master.slots.draining()  # out of rotation for good
    assert len(system.sent(signal.SIGTERM)) == 2


def test_a_second_term_in_the_window_drains_now(system):
    master = make_master(system, "--health-check", "/health", "--deregister-delay", "30")
    boot(master)
    master.loop.enqueue(signal.SIGTERM)
    turns(master)
    master.loop.enqueue(signal.SIGTERM)
    turns(master)
    assert master.lifecycle.state is MasterState.DRAINING


def test_int_stops_quickly_and_the_graceful_timeout_kills(system):
    master = make_master(system, "--graceful-timeout", "3")
    workers = boot(master)
    master.loop.enqueue(signal.SIGINT)
    turns(master)
    assert master.lifecycle.state is MasterState.STOPPING
    assert sorted(system.sent(signal.SIGQUIT)) == workers
    run_for(master, system, 2)
    assert system.sent(signal.SIGKILL) == []
    run_for(master, system, 1.5)
    assert sorted(system.sent(signal.SIGKILL)) == workers
    turns(master)
    assert master.lifecycle.state is MasterState.STOPPED


def test_a_stop_during_an_upgrade_rolls_it_back_first(system, tmp_path):
    from polycorn.server import identity

    master = make_master(system, "--pid", str(tmp_path / "p.pid"))
    boot(master)
    master.loop.enqueue(signal.SIGUSR2)
    turns(master)
    (new_pid,) = system.successors
    master.loop.enqueue(signal.SIGTERM)
    turns(master)
    assert system.group_signals == [(new_pid, signal.SIGKILL)]
    assert master.lifecycle.state is MasterState.DRAINING  # not back to READY
    status = identity.read_record(str(tmp_path / "p.pid.m0"))
    assert (status["state"], status["reason"]) == ("rolled_back",
                                                   "the old master was asked to stop")


def test_kill_everything_kills_and_reaps(system):
    master = make_master(system)
    workers = boot(master)
    master.shutdown.kill_everything()
    assert sorted(system.sent(signal.SIGKILL)) == workers
    assert not system.exits
