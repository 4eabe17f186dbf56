"""The chaos history seam: off by default, one JSON line per record when on, the store
writes and the fence's verdicts recorded with their monotonic start and end."""

from __future__ import annotations

import json
import socket
import time

import pytest
from polycorn.ha import history
from polycorn.ha.commands import NodeCommand
from polycorn.ha.fencing import Fence
from polycorn.ha.inbox import Inbox
from polycorn.ha.memory_store import MemoryStore
from polycorn.ha.registry import NodeInfo, NodeState
from polycorn.ha.store import StoreUnavailable
from polycorn.server.sidecar import Channel


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_off_unless_the_environment_names_a_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(history, "_current", history.History())
    assert not history.open_from_env("n1", environ={}).enabled
    history.current().record("state", node="n1")  # a no-op, no file anywhere
    assert list(tmp_path.iterdir()) == []


def test_each_process_appends_monotonic_lines_to_its_own_file(tmp_path, monkeypatch):
    monkeypatch.setattr(history, "_current", history.History())
    before = time.clock_gettime(time.CLOCK_MONOTONIC)
    recorder = history.open_from_env("n/1", environ={history.ENV: str(tmp_path)})
    try:
        assert recorder.enabled and history.current() is recorder
        recorder.record("state", node="n1", state="ready")
        recorder.record("step_down", node="n1")
    finally:
        recorder.close()
    (path,) = tmp_path.iterdir()
    assert path.name.startswith("n-1-")  # the name is made safe for a file name
    first, second = lines(path)
    assert first["k"] == "state" and first["who"] == "n/1" and first["state"] == "ready"
    assert before <= first["t"] <= second["t"] <= time.clock_gettime(time.CLOCK_MONOTONIC)


class Failing(MemoryStore):
    def heartbeat(self, *args, **kwargs):
        raise StoreUnavailable("TimeoutError: Redis paused")


def test_the_recording_store_logs_writes_with_their_outcome(tmp_path):
    recorder = history.History(str(tmp_path / "a.jsonl"), "n1")
    store = history.RecordingStore(Failing(), recorder)
    info = NodeInfo("n1", "h", "127.0.0.1:1", 7, "r1", NodeState.READY, 2, 2, 4, 2)
    incarnation = store.register(info, 3000)
    epoch = store.acquire_lease("n1", 6000, "vacant")
    with pytest.raises(StoreUnavailable):
        store.heartbeat(info, incarnation, 3000)
    store.snapshot()  # a read: not recorded
    recorder.close()
    register, acquire, heartbeat = lines(tmp_path / "a.jsonl")
    assert (register["op"], register["node"], register["res"]) == ("register", "n1", incarnation)
    assert (acquire["op"], acquire["res"]) == ("acquire_lease", epoch)
    assert heartbeat["op"] == "heartbeat" and heartbeat["res"] == "unavailable"
    assert heartbeat["error"] == "StoreUnavailable" and heartbeat["t"] <= heartbeat["t1"]


def test_the_inbox_records_each_fence_verdict(tmp_path, monkeypatch):
    recorder = history.History(str(tmp_path / "n1.jsonl"), "n1")
    monkeypatch.setattr(history, "_current", recorder)
    store = MemoryStore()
    fence = Fence("n1", incarnation=1)
    fence.observe(5)
    mine, theirs = socket.socketpair()
    try:
        inbox = Inbox(store, fence, Channel(mine), "n1")
        inbox._deliver(NodeCommand("n1", 1, 5, "ttin", 1, "fresh", "n2").encode())
        inbox._deliver(NodeCommand("n1", 1, 4, "ttou", 1, "stale", "n3").encode())
        inbox._deliver(NodeCommand("n1", 1, 5, "ttin", 1, "fresh", "n2").encode())  # replayed
        theirs.settimeout(1.0)
        relayed = theirs.recv(65536).decode()
    finally:
        mine.close()
        theirs.close()
        recorder.close()
    fresh, stale, replayed = lines(tmp_path / "n1.jsonl")
    assert relayed.count('"fresh"') == 1  # relayed to the master once, not twice
    assert (replayed["id"], replayed["accepted"], replayed["verdict"]) == ("fresh", False, "replayed")
    assert (fresh["id"], fresh["accepted"], fresh["epoch"], fresh["by"]) == ("fresh", True, 5, "n2")
    assert (stale["id"], stale["accepted"], stale["verdict"]) == ("stale", False, "stale_epoch")
    assert stale["highest_before"] == 5 and stale["target"] == "n1"
