"""The sync's rule for a hung slot (ha/haproxy/hung.py), on values alone."""

from __future__ import annotations

from polycorn.ha.haproxy import config as cfg
from polycorn.ha.haproxy.hung import SHUT_AFTER, HungSlots
from polycorn.ha.haproxy.servers import Admin, ServerState


def slot(name: str, op: str, admin: Admin = Admin.READY, port: int = 8001,
         checked: bool = True) -> ServerState:
    return ServerState(name, "127.0.0.1", port, admin, 2, op, checked=checked)


def test_a_slot_down_by_its_checks_is_shut_once_after_the_wait():
    hung = HungSlots(shut_after=1.0)
    assert hung.due([slot("s1", "down"), slot("s2", "up")], 10.0) == []
    assert hung.due([slot("s1", "down")], 10.9) == []  # still connecting streams: wait
    assert hung.due([slot("s1", "down")], 11.0) == ["s1"]
    assert hung.due([slot("s1", "down")], 12.0) == []  # once per down spell
    assert hung.due([slot("s1", "up")], 13.0) == []
    assert hung.due([slot("s1", "down")], 14.0) == []  # a new spell waits afresh
    assert hung.due([slot("s1", "down")], 15.0) == ["s1"]


def test_slots_drained_out_of_service_or_unchecked_are_left_alone():
    # Drained: its health path answers 503 by design, and what it holds must finish.
    hung = HungSlots(shut_after=0.0)
    servers = [slot("s1", "down", Admin.MAINT), slot("s2", "down", port=cfg.PLACEHOLDER_PORT),
               slot("s3", "down", checked=False), slot("s4", "down", Admin.DRAIN),
               slot("s5", "down")]
    assert hung.due(servers, 1.0) == ["s5"]


def test_the_wait_outlasts_the_generated_connect_timeout():
    # A stream connecting when the checks failed must have connected or been retried
    # elsewhere before its session is shut: that is the whole point of waiting.
    # Its connect timeout, then HAProxy's turn-around before the retry (min(timeout
    # connect, 1 s)), which goes to another server (option redispatch 1).
    connect_s = cfg.FrontOptions(cluster="c", redis="redis://x").connect_timeout_ms / 1000
    assert SHUT_AFTER >= connect_s + min(connect_s, 1.0)
    assert "option redispatch 1" in cfg.render(cfg.FrontOptions(cluster="c", redis="redis://x"))


def test_the_wait_is_short_of_a_clients_patience():
    # Every request a hung host held waits for the shutdown: the checks' detection
    # (fall 2 x (inter + timeout check)) plus the sync's look plus the wait must stay
    # under a 2 s client timeout, with room for the resent request, or each of them fails (make demo's paused node: 7 of 7).
    from polycorn.ha.haproxy.sync import PERIOD

    opts = cfg.FrontOptions(cluster="c", redis="redis://x")
    text = cfg.render(opts)
    assert "timeout check 400ms" in text and "inter 250ms fastinter 100ms" in text
    detection = 0.25 + 0.4 + 0.1 + 0.4  # first check after up to inter, then fastinter
    assert detection + PERIOD + SHUT_AFTER <= 1.8
