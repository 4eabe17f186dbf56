"""server/messages.py: every kind both ways in wire versions 1 and 2, and every refusal.

The version 1 dicts below are exactly what the release before the typed messages
(5588dfb) wrote; a table of (message, wire dict) drives the writer and reader tests.
"""

from __future__ import annotations

import json
import logging
import os
import socket

import pytest
from polycorn.server import messages
from polycorn.server.messages import (
    Command,
    Failed,
    Hello,
    MalformedMessage,
    MasterEvent,
    MessageError,
    Promote,
    Ready,
    Result,
    State,
    UnknownVersion,
    from_wire,
)
from polycorn.server.sidecar import Channel

V1 = [
    (Hello(41, ("127.0.0.1:8000",), 2, 4, None, "r1"),
     {"type": "hello", "pid": 41, "node": {"bind": ["127.0.0.1:8000"], "workers": 2,
                                            "max_workers": 4, "proc_name": None,
                                            "release": "r1"}}),
    (State("ready", 2, 3, 2, 4, 41, "boot"),
     {"type": "state", "state": "ready", "workers": 2, "workers_target": 3,
      "workers_configured": 2, "max_workers": 4, "pid": 41, "reason": "boot"}),
    (MasterEvent("upgrade_started", "new master pid 7"),
     {"type": "event", "event": "upgrade_started", "reason": "new master pid 7"}),
    (Result("c1", False, "9 workers is outside 0..4"),
     {"type": "result", "id": "c1", "ok": False, "reason": "9 workers is outside 0..4"}),
    (Command("c1", "set_workers", 3), {"type": "command", "id": "c1", "cmd": "set_workers",
                                       "n": 3}),
    (Command("c2", "drain"), {"type": "command", "id": "c2", "cmd": "drain"}),
    (Ready(77), {"type": "ready", "pid": 77}),
    (Failed("app failed to load"), {"type": "failed", "reason": "app failed to load"}),
    (Promote(), {"type": "promote"}),
]
IDS = [f"{m.KIND}-{i}" for i, (m, _) in enumerate(V1)]


@pytest.mark.parametrize(("message", "wire"), V1, ids=IDS)
def test_version_1_is_todays_dicts_both_ways(message, wire):
    assert message.to_wire(1) == wire
    got = from_wire(wire)
    assert (got.message, got.version) == (message, 1)
    # An explicit "version": 1 reads the same.
    assert from_wire({**wire, "version": 1}).message == message


@pytest.mark.parametrize(("message", "wire"), V1, ids=IDS)
def test_version_2_keeps_every_version_1_field_and_names_itself(message, wire):
    out = message.to_wire(2)
    assert out == {**wire, "version": 2}  # a version 1 reader ignores only "version"
    assert message.to_wire() == out  # WIRE_VERSION is 2
    through_json = json.loads(json.dumps(out))
    got = from_wire(through_json)
    assert (got.message, got.version) == (message, 2)


def test_every_kind_is_in_the_table():
    assert {m.KIND for m, _ in V1} == set(messages.KINDS)


def test_version_1_senders_that_leave_counts_out_still_read():
    # Test doubles of a version 1 master send state without workers_target (and
    # today's agent defaults what is missing): those stay readable, as None.
    got = from_wire({"type": "state", "state": "draining", "workers": 2}).message
    assert got == State("draining", workers=2)
    # ...and None is left out on the wire, never written as null.
    assert State("ready").to_wire(1) == {"type": "state", "state": "ready", "reason": ""}
    assert from_wire({"type": "hello", "pid": 5}).message == Hello(5)
    assert from_wire({"type": "failed"}).message == Failed("")


@pytest.mark.parametrize("version", [99, 3, 0, -1, "2", None, True, 2.0])
def test_an_unknown_version_is_refused_with_the_version_seen(version):
    with pytest.raises(UnknownVersion) as info:
        from_wire({"type": "ready", "pid": 1, "version": version})
    assert info.value.version == version and info.value.kind == "ready"
    assert "not one this release reads (1, 2)" in str(info.value)


@pytest.mark.parametrize(("raw", "why"), [
    ({"type": "ready"}, "ready: missing field 'pid'"),
    ({"type": "ready", "pid": "12", "version": 2}, "field 'pid' is str, expected int"),
    ({"type": "ready", "pid": True}, "field 'pid' is bool, expected int"),
    ({"type": "command", "cmd": "ttin"}, "command: missing field 'id'"),
    ({"type": "command", "id": "x", "cmd": "ttin", "n": "3"}, "field 'n' is str"),
    ({"type": "result", "id": "x", "ok": 1}, "field 'ok' is int, expected bool"),
    ({"type": "state", "workers": 2}, "state: missing field 'state'"),
    ({"type": "state", "state": "ready", "workers": 1.5}, "field 'workers' is float"),
    ({"type": "hello", "pid": 1, "node": {"bind": [8000]}}, "list of strings"),
    ({"type": "hello", "pid": 1, "node": []}, "field 'node' is list"),
    ({"type": "event", "event": 3}, "field 'event' is int"),
    ({"type": "launch", "version": 2}, "unknown message type 'launch'"),
    ({"pid": 1}, "unknown message type None"),
    (["ready"], "a message is a JSON object, not list"),
])
def test_malformed_messages_are_refused_with_the_reason(raw, why):
    with pytest.raises(MalformedMessage, match=why.replace("(", r"\(").replace(")", r"\)")):
        from_wire(raw)


def test_a_kind_meant_for_the_other_side_is_refused():
    with pytest.raises(MalformedMessage, match="'promote' message is not meant for this side"):
        from_wire({"type": "promote"}, messages.FOR_OLD_MASTER)
    with pytest.raises(MalformedMessage, match="'hello' message is not meant"):
        from_wire({"type": "hello", "pid": 1}, messages.FOR_MASTER_FROM_SIDECAR)


def test_a_sender_writes_the_newest_version_its_peer_reads():
    assert messages.speak(None) == messages.WIRE_VERSION == 2  # nothing heard yet
    assert messages.speak(1) == 1  # a version 1 release on the other end
    assert messages.speak(2) == 2
    assert messages.speak(7) == 2  # a later release: it still reads ours
    # The old master's announcement in the USR2 hand-off header; none means version 1.
    assert messages.announced_version({"owner": 3, "drained": False}) == 1
    assert messages.announced_version({"owner": 3, messages.ANNOUNCE_KEY: 2}) == 2
    assert messages.announced_version({messages.ANNOUNCE_KEY: "junk"}) == 1
    with pytest.raises(ValueError, match="cannot write wire version 3"):
        Promote().to_wire(3)


def test_refusal_is_one_log_line_with_receiver_pid_version_and_action(caplog):
    log = logging.getLogger("polycorn.error.test")
    raws = [{"type": "command", "id": "a", "cmd": "ttin", "n": 1, "version": 99},
            {"type": "command", "id": "b", "cmd": "ttou"},
            {"type": "command", "cmd": "ttou", "version": 2}]
    with caplog.at_level(logging.WARNING, logger="polycorn.error.test"):
        got = messages.receive(raws, messages.FOR_MASTER_FROM_SIDECAR, "master web", log,
                               "dropped it; the master carries on")
    assert [(r.message, r.version) for r in got] == [(Command("b", "ttou"), 1)]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert lines[0] == (f"master web (pid {os.getpid()}): refused a 'command' message of wire "
                        "version 99: wire version 99 is not one this release reads (1, 2); "
                        "dropped it; the master carries on")
    assert "wire version 2: command: missing field 'id'" in lines[1]


def test_errors_are_value_errors_with_their_fields():
    exc = MalformedMessage("x", version=2, kind="ready")
    assert isinstance(exc, MessageError) and isinstance(exc, ValueError)
    assert (exc.reason, exc.version, exc.kind) == ("x", 2, "ready")


def test_through_a_real_channel_both_versions():
    a, b = socket.socketpair()
    left, right = Channel(a), Channel(b)
    try:
        for message, _ in V1:
            for version in (1, 2):
                left.send(message.to_wire(version))
                got = from_wire(right.recv(2))
                assert (got.message, got.version) == (message, version)
    finally:
        left.close()
        right.close()
