"""The sidecar channel's commands and the facts broadcast, on a fake OS, over a real socketpair."""

from __future__ import annotations

import socket

import pytest
from polycorn.server.master.state import MasterState
from polycorn.server.sidecar import Channel, Sidecar, SidecarProcess
from support.fake_system import boot, make_master, mark_ready, turns


@pytest.fixture
def agent(system):
    """A master and the agent's end of a sidecar channel (no sidecar process runs)."""
    master = make_master(system)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    # Running already (a fake pid), so the supervisor starts no process of its own.
    proc = SidecarProcess(Sidecar("agent", lambda channel: None), pid=system.fork(),
                          channel=Channel(ours))
    master.supervisor.procs.append(proc)
    yield master, Channel(theirs)
    theirs.close()
    ours.close()


def test_commands_are_run_and_answered(system, agent):
    master, channel = agent
    boot(master)
    channel.send({"type": "command", "id": "7", "cmd": "ttin", "n": 2})
    turns(master)
    replies = [m for m in drain(channel) if m["type"] == "result"]
    assert replies == [{"type": "result", "id": "7", "ok": True, "reason": ""}]
    assert master.num_workers == 4 and len(master.pool.live()) == 4


def test_a_bad_command_is_refused_with_the_reason(system, agent):
    master, channel = agent
    boot(master)
    limit = master.announcer.max_workers()
    for cid, msg in enumerate(({"cmd": "set_workers", "n": limit + 1}, {"cmd": "jump"})):
        channel.send({"type": "command", "id": str(cid), **msg})
    turns(master)
    reasons = [m["reason"] for m in drain(channel) if m["type"] == "result"]
    assert reasons == [f"{limit + 1} workers is outside 0..{limit}", "unknown command 'jump'"]


def test_drain_turns_the_health_path_and_the_state(system, agent):
    master, channel = agent
    boot(master)
    channel.send({"type": "command", "id": "1", "cmd": "drain"})
    turns(master)
    states = [m["state"] for m in drain(channel) if m["type"] == "state"]
    assert states[-1] == "draining" and master.slots.draining()
    channel.send({"type": "command", "id": "2", "cmd": "undrain"})
    turns(master)
    assert [m["state"] for m in drain(channel) if m["type"] == "state"][-1] == "ready"
    assert not master.slots.draining()


def test_the_state_broadcast_counts_ready_workers(system, agent):
    master, channel = agent
    turns(master)
    mark_ready(master)
    turns(master)
    assert master.lifecycle.state is MasterState.READY
    last = [m for m in drain(channel) if m["type"] == "state"][-1]
    assert (last["state"], last["workers"], last["workers_target"]) == ("ready", 2, 2)


def drain(channel: Channel) -> list[dict]:
    out = []
    while (msg := channel.recv(timeout=0.2)) is not None:
        out.append(msg)
    return out
