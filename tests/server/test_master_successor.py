"""The USR2 handshake on a fake OS: both sides, over a real socketpair, without exec.

The fake's spawn_successor keeps the new master's end of the socketpair, as exec
would have: the test plays the new master (receives the listeners, says "ready"
or "failed") or the old one (sends "promote").
"""

from __future__ import annotations

import signal
import socket

from polycorn.server import identity, messages, pidfile
from polycorn.server.handoff import receive_listeners
from polycorn.server.master import successor
from polycorn.server.master.state import MasterState
from polycorn.server.master.successor import Inherited
from polycorn.server.sidecar import Channel, Sidecar, SidecarProcess
from support.fake_system import FakeSystem, boot, make_master, mark_ready, run_for, turns


def usr2(master, system: FakeSystem) -> tuple[int, Channel]:
    """USR2; the new master's pid and its end of the channel (listeners received)."""
    master.loop.enqueue(signal.SIGUSR2)
    turns(master)
    assert master.lifecycle.state is MasterState.UPGRADING
    (new_pid,) = system.successors
    end = system.successors[new_pid]
    end.settimeout(5)
    _, info, _ = receive_listeners(end)
    assert info["attempt"] == 1 and info["drained"] is False
    assert info[messages.ANNOUNCE_KEY] == messages.WIRE_VERSION  # the successor answers in it
    return new_pid, Channel(end)


def status_of(tmp_path) -> dict:
    return identity.read_record(str(tmp_path / "p.pid.m0")) or {}


def test_ready_is_answered_promote_and_the_old_master_drains(system, tmp_path):
    master = make_master(system, "--pid", str(tmp_path / "p.pid"))
    workers = boot(master)
    new_pid, channel = usr2(master, system)
    assert system.successor_argv == [["polycorn-next"]]
    assert status_of(tmp_path)["state"] == "upgrading"
    channel.send({"type": "ready", "pid": new_pid})
    turns(master)
    assert channel.recv(timeout=5) == {"type": "promote"}
    assert master.successor == new_pid
    assert master.lifecycle.state is MasterState.DRAINING
    assert sorted(system.sent(signal.SIGTERM)) == workers
    for pid in workers:
        system.exit(pid)
    turns(master)
    assert master.lifecycle.state is MasterState.STOPPED
    system.exit(new_pid)  # the promoted successor's later exit is not ours to report
    turns(master)


def test_an_old_master_that_promoted_never_tells_its_agent_the_node_is_stopping(system):
    # chaos --random 20: the old generation's agent wrote "stopping" before the
    # successor's agent registered, and the HAProxy sync took the node out (maint) in
    # that gap while it served: it was the last server in rotation, 64 HTTP 503.
    master = make_master(system)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    master.supervisor.procs.append(SidecarProcess(Sidecar("agent", lambda channel: None),
                                                  pid=system.fork(), channel=Channel(ours)))
    agent = Channel(theirs)
    try:
        workers = boot(master)
        new_pid, channel = usr2(master, system)
        channel.send({"type": "ready", "pid": new_pid})
        turns(master)
        assert master.lifecycle.state is MasterState.DRAINING  # handing over
        for pid in workers:
            system.exit(pid)
        turns(master)
        states = []
        while (msg := agent.recv(timeout=0.2)) is not None:
            if msg["type"] == "state":
                states.append(msg["state"])
        assert "upgrading" in states
        assert "stopping" not in states[states.index("upgrading"):]
    finally:
        theirs.close()
        ours.close()


def test_an_old_master_that_promoted_leaves_the_pid_file_to_its_successor(system, tmp_path):
    """Its removal would race the successor's write (a read, then an unlink)."""
    path = str(tmp_path / "p.pid")
    master = make_master(system, "--pid", path)
    pidfile.write(path, master.pid)
    boot(master)
    new_pid, channel = usr2(master, system)
    channel.send({"type": "ready", "pid": new_pid})
    turns(master)
    assert master.successor == new_pid
    master.cleanup()
    assert (tmp_path / "p.pid").exists()  # the successor rewrites it; we never unlink it


def test_failed_rolls_back_with_its_reason(system, tmp_path):
    master = make_master(system, "--pid", str(tmp_path / "p.pid"))
    workers = boot(master)
    new_pid, channel = usr2(master, system)
    channel.send({"type": "failed", "reason": "worker failed to boot: ImportError"})
    turns(master)
    assert system.group_signals == [(new_pid, signal.SIGKILL)]  # its whole process group
    assert master.lifecycle.state is MasterState.READY and master.successor == 0
    status = status_of(tmp_path)
    assert (status["state"], status["reason"], status["new_pid"]) == (
        "rolled_back", "worker failed to boot: ImportError", new_pid)
    assert system.sent(signal.SIGTERM) == []  # the old workers never stopped
    assert sorted(r.pid for r in master.pool.live()) == workers


def test_a_successor_that_dies_is_rolled_back(system, tmp_path):
    master = make_master(system, "--pid", str(tmp_path / "p.pid"))
    boot(master)
    new_pid, _ = usr2(master, system)
    system.exit(new_pid, 1)
    turns(master)
    assert master.lifecycle.state is MasterState.READY
    assert status_of(tmp_path)["reason"] == "the new master exited (exit status 1)"


def test_a_successor_not_ready_in_time_is_rolled_back(system, tmp_path):
    master = make_master(system, "--pid", str(tmp_path / "p.pid"), "--upgrade-timeout", "5")
    boot(master)
    new_pid, _ = usr2(master, system)
    run_for(master, system, 6)
    assert system.group_signals == [(new_pid, signal.SIGKILL)]
    assert status_of(tmp_path)["reason"] == "the new master was not ready within 5s"


def test_a_usr2_while_upgrading_is_ignored_and_a_sidecar_told_why(system):
    master = make_master(system)
    boot(master)
    usr2(master, system)
    master.loop.enqueue(signal.SIGUSR2)
    turns(master)
    assert len(system.successors) == 1
    assert master.commands.run("upgrade") == (False, "master is upgrading")


def test_the_new_master_says_ready_and_serves_once_promoted(system, tmp_path):
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    old_master = Channel(theirs)
    try:
        master = make_master(system, "--pid", str(tmp_path / "p.pid"),
                             inherited=Inherited(Channel(ours), [], old_pid=4242))
        assert master.commands.run("upgrade") == (
            False, "this master is itself a new generation, not yet promoted")
        turns(master)
        mark_ready(master)
        turns(master)
        assert old_master.recv(timeout=5) == {"type": "ready", "pid": master.pid}
        assert master.predecessor.active
        old_master.send({"type": "promote"})
        turns(master)
        assert not master.predecessor.active
        status = status_of(tmp_path)
        assert (status["state"], status["upgraded_from"]) == ("running", 4242)
        assert (tmp_path / "p.pid").read_text().strip() == str(master.pid)
    finally:
        theirs.close()


def test_a_promoted_master_writes_the_pid_file_again_if_its_old_master_removed_it(
        system, tmp_path, caplog):
    """Releases up to 5588dfb unlink the pid file on exit if they read their own pid in
    it: the successor's write can fall between that read and the unlink."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    old_master = Channel(theirs)
    path = tmp_path / "p.pid"
    system.parent = 4242  # the old master started us
    errors = successor.log  # the error log, which does not propagate once configured
    errors.addHandler(caplog.handler)
    try:
        master = make_master(system, "--pid", str(path),
                             inherited=Inherited(Channel(ours), [], old_pid=4242))
        turns(master)
        mark_ready(master)
        turns(master)
        old_master.recv(timeout=5)
        old_master.send({"type": "promote"})
        turns(master)
        assert pidfile.running_pid(str(path)) == master.pid
        path.unlink()  # the old master's racy removal, after our write
        turns(master)
        assert not path.exists()  # the old master still runs: its exit comes first
        system.parent = 1  # it exited: we were reparented
        turns(master)
        assert pidfile.read(str(path)) == pidfile.running_pid(str(path)) == master.pid
        assert "no longer named this master after the old master exited" in caplog.text
        caplog.clear()
        path.unlink()  # later removals are not ours to repair
        turns(master)
        assert not path.exists() and "no longer named" not in caplog.text
    finally:
        errors.removeHandler(caplog.handler)
        theirs.close()


def test_the_new_master_keeps_booting_when_the_old_one_vanishes(system):
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    master = make_master(system, inherited=Inherited(Channel(ours), [], old_pid=4242))
    turns(master)
    theirs.close()  # the old master died while we boot
    turns(master)
    assert not master.predecessor.active
    assert master.lifecycle.state is MasterState.BOOTING
    mark_ready(master)
    turns(master)
    assert master.lifecycle.state is MasterState.READY


def test_a_successor_speaking_an_unknown_wire_version_is_rolled_back_at_once(system, tmp_path):
    master = make_master(system, "--pid", str(tmp_path / "p.pid"))
    boot(master)
    new_pid, channel = usr2(master, system)
    channel.send({"type": "ready", "pid": new_pid, "version": 99})
    turns(master)
    assert system.group_signals == [(new_pid, signal.SIGKILL)]
    assert master.lifecycle.state is MasterState.READY
    assert "cannot read" in status_of(tmp_path)["reason"]
