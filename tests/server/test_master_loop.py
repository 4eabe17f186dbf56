"""The master's loop and signal table, on a fake OS: no fork, no signal delivered.

The loop is driven turn by turn (`loop.turn()`); signals are put in its queue as
the real handler would (`loop.enqueue`), so the test process never installs a
handler of its own.
"""

from __future__ import annotations

import os
import signal

import pytest
from polycorn.server.master.loop import QUEUE_LIMIT, SIGNALS, MasterLoop
from polycorn.server.master.state import Lifecycle, MasterState
from support.fake_system import FakeSystem, boot, make_master, turns


def recording_loop(system: FakeSystem, readers=None):
    calls: list[str] = []
    handlers = {name: (lambda name=name: calls.append(name)) for name in SIGNALS.values()}
    loop = MasterLoop(system, Lifecycle(), handlers, duties=lambda: calls.append("duties"),
                      timeout=lambda: 0.5, readers=readers or dict)
    return loop, calls


def test_queued_signals_are_dispatched_in_order_before_the_turns_duties(system):
    loop, calls = recording_loop(system)
    for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGCHLD, signal.SIGTERM):
        loop.enqueue(sig)
    loop.turn()
    assert calls == ["hup", "ttin", "chld", "term", "duties"]
    loop.turn()  # the queue is empty: only the duties
    assert calls[5:] == ["duties"]


def test_an_unknown_signal_is_ignored_and_a_flood_is_capped(system):
    loop, calls = recording_loop(system)
    loop.dispatch(signal.SIGALRM)  # not in the table
    assert calls == []
    for _ in range(QUEUE_LIMIT + 10):
        loop.enqueue(signal.SIGTTIN)
    assert len(loop.queue) == QUEUE_LIMIT


def test_the_table_must_cover_every_signal(system):
    with pytest.raises(ValueError, match="usr2"):
        MasterLoop(system, Lifecycle(), {name: lambda: None for name in SIGNALS.values()
                                         if name != "usr2"},
                   duties=lambda: None, timeout=lambda: 0.5, readers=dict)


def test_a_readable_fd_runs_its_reader_and_an_idle_wait_runs_its_course(system):
    r, w = os.pipe()
    seen: list[bytes] = []
    try:
        loop, calls = recording_loop(system, readers=lambda: {r: lambda: seen.append(os.read(r, 10))})
        before = system.now
        loop.turn()
        assert seen == [] and system.now == pytest.approx(before + 0.5)
        os.write(w, b"x")
        loop.turn()
        assert seen == [b"x"]
    finally:
        os.close(r)
        os.close(w)


def test_the_wakeup_pipe_is_drained(system):
    loop, _ = recording_loop(system)
    os.write(loop.wake_w, b"\x11" * 100)
    loop.turn()
    with pytest.raises(BlockingIOError):
        os.read(loop.wake_r, 1)


def test_the_master_table_maps_signals_to_its_parts(system):
    master = make_master(system)
    boot(master)
    master.loop.enqueue(signal.SIGTTIN)
    turns(master)
    assert master.num_workers == 3 and len(master.pool.live()) == 3
    master.loop.enqueue(signal.SIGTTOU)
    turns(master)
    assert master.num_workers == 2
    assert len(system.sent(signal.SIGTERM)) == 1  # the oldest worker is retired
    master.loop.enqueue(signal.SIGWINCH)  # not daemonized: ignored
    turns(master)
    assert master.num_workers == 2
    master.loop.enqueue(signal.SIGUSR1)
    turns(master)
    assert len(system.sent(signal.SIGUSR1)) == 3  # every worker, the retiring one too
    master.loop.enqueue(signal.SIGINT)
    turns(master)
    assert master.lifecycle.state is MasterState.STOPPING


def test_the_object_hooks_receive_keeps_gunicorns_names(system):
    master = make_master(system)
    boot(master)
    assert type(master).__name__ == "Arbiter"
    assert master.cfg.workers == 2 and master.num_workers == 2
    assert master.pid == os.getpid() and master.proc_name and master.log
    assert master.LISTENERS == []
    assert sorted(master.WORKERS) == sorted(r.pid for r in master.pool.live())
    assert all(w.server is master for w in master.WORKERS.values())
