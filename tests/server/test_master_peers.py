"""The peer group of `--masters N` on a fake OS: repair a dead peer, follow a stop, serve hand-off."""

from __future__ import annotations

import os

from polycorn.server.config.loader import load_config
from polycorn.server.handoff import try_lock
from polycorn.server.master.peers import GroupStop, MasterGroup, worker_share


def group(system, tmp_path, index: int = 0) -> MasterGroup:
    path = str(tmp_path / "h.sock")
    cfg = load_config(["--handoff", path, "--masters", "2", "testapp:application"], {})
    return MasterGroup(cfg, [], None, index, None, ["polycorn"], "/", system=system)


def test_a_peer_whose_lock_is_free_is_restarted_once(system, tmp_path):
    peers = group(system, tmp_path)
    peers.tick(stopping=False)
    assert peers.peer_pids == {system.forks[-1]} and len(system.forks) == 1
    peers.tick(stopping=False)  # too soon: one tick per TICK
    assert len(system.forks) == 1
    assert peers.owner is not None  # nobody owned the hand-off path: this master took it
    assert peers.serve_handoff_request(peers.owner.fileno() + 1000) is False
    peers.close(successor=False)


def test_a_live_peer_is_left_alone(system, tmp_path):
    held = try_lock(str(tmp_path / "h.sock.m1.lock"))  # master 1 is running
    try:
        peers = group(system, tmp_path)
        peers.tick(stopping=False)
        assert system.forks == []
        peers.close(successor=False)
    finally:
        os.close(held)


def test_a_stopping_group_restarts_nobody_and_peers_read_the_mode(system, tmp_path):
    peers = group(system, tmp_path)
    peers.announce_stop(GroupStop.DEREGISTER)
    assert group(system, tmp_path, index=1).requested_stop() is GroupStop.DEREGISTER
    peers.tick(stopping=False)
    assert system.forks == []
    peers.close(successor=False)


def test_only_the_handoff_socket_is_served(system, tmp_path):
    peers = group(system, tmp_path)
    assert peers.serve_handoff_request(0) is False  # no owner: nothing to serve
    assert peers.select_fds() == []


def test_workers_are_shared_out_with_the_remainder_first():
    assert [worker_share(5, 2, i) for i in range(2)] == [3, 2]
