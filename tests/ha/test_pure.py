"""Unit tests of the pure pieces: timer invariants, Redis URLs, fencing, commands,
back-off and event encoding (the leader's duties: test_duties.py)."""

from __future__ import annotations

import pytest
from polycorn.ha.backoff import Backoff
from polycorn.ha.commands import CommandError, NodeCommand
from polycorn.ha.events import Event
from polycorn.ha.fencing import Fence, FenceVerdict
from polycorn.ha.redis_url import RedisKind, RedisUrlError, parse_redis_url
from polycorn.ha.registry import default_node_id, default_release
from polycorn.ha.timing import Timing, TimingError
from polycorn.server.messages import Command

# -- timing ------------------------------------------------------------------------------


def test_default_timing_is_sound():
    t = Timing().check()
    assert (t.heartbeat, t.node_ttl, t.lease, t.renew, t.step_down) == (1, 3, 6, 1, 4)
    assert t.call_bound == 2.0
    assert (t.backoff_cap, t.recovery_grace, t.duty_interval) == (2.0, 7.0, 0.25)


@pytest.mark.parametrize("changes, message", [
    ({"step_down": 6.0}, "must be shorter than the lease"),
    ({"renew": 2.5}, "must be <= step-down deadline"),
    ({"read_timeout": 2.0}, "must be <= step-down deadline"),
    ({"retries": 3}, "must be <= step-down deadline"),
    ({"node_ttl": 2.5}, "must be <= node TTL"),
    ({"heartbeat": 0}, "heartbeat must be positive"),
    ({"retries": -1}, "retries must be >= 0"),
])
def test_broken_timing_invariants_are_named(changes, message):
    with pytest.raises(TimingError, match=message):
        Timing(**changes).check()


# -- Redis URLs --------------------------------------------------------------------------


@pytest.mark.parametrize("url, expected", [
    ("redis://127.0.0.1:6380/2", dict(kind=RedisKind.TCP, host="127.0.0.1", port=6380, db=2)),
    ("redis://localhost", dict(kind=RedisKind.TCP, host="localhost", port=6379, db=0)),
    ("redis://:s%40cret@h:1/0", dict(host="h", port=1, password="s@cret", username=None)),
    ("redis://app:pw@h:1/3", dict(username="app", password="pw", db=3)),
    ("rediss://h:6390/1", dict(kind=RedisKind.TLS, host="h", port=6390, db=1)),
    ("redis://[::1]:7000/0", dict(host="::1", port=7000)),
    ("unix:///run/redis.sock?db=4", dict(kind=RedisKind.UNIX, path="/run/redis.sock", db=4)),
    ("unix://:pw@/tmp/r.sock", dict(kind=RedisKind.UNIX, path="/tmp/r.sock", password="pw")),
    ("sentinel://127.0.0.1:26379,127.0.0.1:26380,h3/mymaster/5",
     dict(kind=RedisKind.SENTINEL, service="mymaster", db=5,
          sentinels=(("127.0.0.1", 26379), ("127.0.0.1", 26380), ("h3", 26379)))),
    ("sentinel://:pw@[::1]:5000/svc", dict(sentinels=(("::1", 5000),), service="svc",
                                            password="pw", db=0)),
])
def test_redis_urls(url, expected):
    target = parse_redis_url(url)
    for name, value in expected.items():
        assert getattr(target, name) == value, name
    assert "pw" not in target.display() and "cret" not in target.display()


@pytest.mark.parametrize("url, message", [
    ("localhost:6379", "not a Redis URL"),
    ("http://h/0", "unknown scheme"),
    ("redis://h:99999/0", "bad port"),
    ("redis://h:1/x", "bad database number"),
    ("sentinel://h:1", "missing Sentinel service"),
    ("sentinel:///svc", "no sentinel address"),
    ("unix://", "missing socket path"),
])
def test_bad_redis_urls_say_why(url, message):
    with pytest.raises(RedisUrlError, match=message):
        parse_redis_url(url)


# -- commands and fencing ----------------------------------------------------------------


def test_command_round_trip_and_validation():
    c = NodeCommand("n1", 3, 9, "set_workers", 4, issued_by="n2")
    assert NodeCommand.decode(c.encode()) == c
    assert c.to_master() == Command(c.id, "set_workers", 4)
    # On the wire in version 1 (today's dicts): no "n" when the verb takes none.
    assert c.to_master().to_wire(1) == {"type": "command", "id": c.id, "cmd": "set_workers",
                                        "n": 4}
    assert NodeCommand("n1", 1, 1, "drain", id="k").to_master().to_wire(1) == {
        "type": "command", "id": "k", "cmd": "drain"}
    with pytest.raises(CommandError, match="unknown command"):
        NodeCommand("n1", 1, 1, "rm -rf")
    with pytest.raises(CommandError, match="needs a count"):
        NodeCommand("n1", 1, 1, "ttin")
    with pytest.raises(CommandError, match="unparsable"):
        NodeCommand.decode("{not json")


def test_fence_rejects_older_epochs_other_nodes_and_incarnations():
    fence = Fence("n1", incarnation=2)
    fence.observe(5)
    assert fence.admit(NodeCommand("n1", 2, 4, "ttin", 1)).verdict is FenceVerdict.STALE_EPOCH
    assert fence.admit(NodeCommand("n1", 2, 5, "ttin", 1)).admitted
    assert fence.admit(NodeCommand("n1", 1, 5, "ttin", 1)).verdict is FenceVerdict.OTHER_INCARNATION
    assert fence.admit(NodeCommand("n2", 2, 5, "ttin", 1)).verdict is FenceVerdict.OTHER_NODE
    assert fence.admit(NodeCommand("n1", 2, 7, "ttou", 1)).admitted
    assert fence.highest_epoch == 7  # a command's epoch raises the fence too
    stale = fence.admit(NodeCommand("n1", 2, 6, "ttou", 1, id="c6"))
    assert stale.reason == "command c6 (ttou) carries epoch 6, older than epoch 7 already seen"
    fence.observe(3)
    assert fence.highest_epoch == 7  # never lowered


def test_fence_refuses_a_command_applied_already():
    # chaos --random 20: a Sentinel failover promoted a replica whose copy of n1's queue
    # still held `set_workers 3`, popped and applied on the old primary; applied again
    # after the later `set_workers 2` of the same epoch, it undid it.
    fence = Fence("n1", incarnation=2)
    assert fence.admit(NodeCommand("n1", 2, 7, "set_workers", 3, id="e93fa0ff")).admitted
    assert fence.admit(NodeCommand("n1", 2, 7, "set_workers", 2, id="b2")).admitted
    replay = fence.admit(NodeCommand("n1", 2, 7, "set_workers", 3, id="e93fa0ff"))
    assert replay.verdict is FenceVerdict.REPLAYED
    assert "e93fa0ff" in replay.reason and "applied already" in replay.reason
    # A refused replay does not count as applied; other commands still pass.
    assert fence.admit(NodeCommand("n1", 2, 7, "ttin", 1, id="c3")).admitted


def test_fence_remembers_a_bounded_number_of_ids():
    from polycorn.ha.fencing import REMEMBERED_IDS

    fence = Fence("n1")
    for i in range(REMEMBERED_IDS + 1):
        assert fence.admit(NodeCommand("n1", 0, 1, "ttin", 1, id=f"c{i}")).admitted
    assert len(fence._applied) == REMEMBERED_IDS
    assert fence.admit(NodeCommand("n1", 0, 1, "ttin", 1, id="c0")).admitted  # forgotten
    assert fence.admit(NodeCommand("n1", 0, 1, "ttin", 1, id="c5")).verdict is FenceVerdict.REPLAYED


# -- back-off, events, registry defaults --------------------------------------------------


def test_backoff_is_capped_jittered_and_resets():
    b = Backoff(base=0.1, cap=2.0, rng=lambda: 1.0)
    assert [b.next_delay() for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    low = Backoff(base=0.1, cap=2.0, rng=lambda: 0.0)
    assert low.next_delay() == pytest.approx(0.05)  # never below half the ceiling
    b.reset()
    assert b.next_delay() == 0.1


def test_event_stream_round_trip():
    e = Event("node_dead", "n2", 4, "no heartbeat for 3.2s", {"by": "n1"})
    back = Event.from_stream("1700000000123-0", e.fields())
    assert (back.kind, back.node, back.epoch, back.reason, back.extra) == (
        "node_dead", "n2", 4, "no heartbeat for 3.2s", {"by": "n1"})
    assert back.time_ms == 1700000000123
    assert back.describe().endswith("node_dead n2 epoch=4 by=n1: no heartbeat for 3.2s")


def test_default_node_id_and_release(tmp_path):
    a, b = default_node_id(), default_node_id()
    assert a != b and a.rsplit("-", 1)[0] == b.rsplit("-", 1)[0]
    release = tmp_path / "releases" / "20240501-abc"
    release.mkdir(parents=True)
    (tmp_path / "current").symlink_to(release)
    assert default_release(str(tmp_path / "current")) == "20240501-abc"
