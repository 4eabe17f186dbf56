"""The sync's reconciliation (ha/haproxy/reconcile.py), a pure function tested on values:
registry nodes and HAProxy's slots in, runtime API commands out. `applied` plays the
commands back onto the slots the way HAProxy does, so every case also checks that a
second pass has nothing left to do."""

from __future__ import annotations

import dataclasses

from polycorn.ha.guard import RecentLosses
from polycorn.ha.haproxy.reconcile import FrontNode, Presence, Trust, reconcile
from polycorn.ha.haproxy.servers import Admin, ServerState

BE = "polycorn"
TRUSTED = Trust(ttl_ms=3000, stable_for=float("inf"), changed_ago=float("inf"), grace=7.0)


def slots(n: int = 4) -> list[ServerState]:
    """A fresh backend: every slot disabled at the placeholder address."""
    return [ServerState(f"s{i}", "127.0.0.1", 1, Admin.MAINT, 1) for i in range(1, n + 1)]


def node(node_id: str, presence: Presence = Presence.READY, port: int | None = None,
         workers: int = 2, **kw) -> FrontNode:
    port = port or 8000 + int(node_id[1:])
    return FrontNode(node_id, ("10.0.0.1", port), presence, workers, **kw)


def applied(servers: list[ServerState], commands: tuple[str, ...]) -> list[ServerState]:
    """HAProxy's effect of the commands on the slots."""
    by_name = {s.name: s for s in servers}
    for command in commands:
        words = command.split()
        assert words[:2] == ["set", "server"], command
        name = words[2].split("/")[1]
        s = by_name[name]
        if words[3] == "addr":
            s = dataclasses.replace(s, addr=words[4], port=int(words[6]))
        elif words[3] == "state":
            s = dataclasses.replace(s, admin=Admin(words[4]))
        elif words[3] == "weight":
            s = dataclasses.replace(s, weight=int(words[4]))
        else:
            raise AssertionError(command)
        by_name[name] = s
    return [by_name[s.name] for s in servers]


def settle(nodes, servers, assignment=None, trust=TRUSTED, absent_ms=None):
    """Plan, apply, and check that the result is a fixed point."""
    plan = reconcile(BE, nodes, servers, assignment or {}, trust, absent_ms)
    after = applied(servers, plan.commands)
    again = reconcile(BE, nodes, after, plan.assignment, trust, absent_ms)
    assert again.commands == (), again.commands
    assert again.assignment == plan.assignment
    return plan, after


def by_name(servers):
    return {s.name: s for s in servers}


# -- joining, serving, weights -------------------------------------------------------------


def test_ready_nodes_fill_the_first_slots_address_and_weight_before_ready():
    plan, after = settle([node("n1"), node("n2", workers=3)], slots())
    assert plan.commands == (
        "set server polycorn/s1 addr 10.0.0.1 port 8001",
        "set server polycorn/s1 weight 2",
        "set server polycorn/s1 state ready",
        "set server polycorn/s2 addr 10.0.0.1 port 8002",
        "set server polycorn/s2 weight 3",
        "set server polycorn/s2 state ready",
    )
    assert plan.assignment == {"n1": "s1", "n2": "s2"}
    assert plan.changes[0].line() == ("n1 slot s1: maint - weight 1 -> ready 10.0.0.1:8001 "
                                      "weight 2 (registry: ready, 2 workers)")
    assert [s.admin for s in after] == [Admin.READY, Admin.READY, Admin.MAINT, Admin.MAINT]


def test_a_booting_node_gets_its_address_in_maint_then_ready_when_the_registry_says_so():
    plan, after = settle([node("n1", Presence.BOOTING, workers=0)], slots())
    assert plan.commands == ("set server polycorn/s1 addr 10.0.0.1 port 8001",)
    assert by_name(after)["s1"].admin is Admin.MAINT
    plan, after = settle([node("n1")], after, plan.assignment)
    assert plan.commands == ("set server polycorn/s1 weight 2",
                             "set server polycorn/s1 state ready")
    assert plan.changes[0].reason == "registry: ready, 2 workers"


def test_weights_follow_the_running_workers():
    _, after = settle([node("n1"), node("n2")], slots())
    plan, after = settle([node("n1", workers=3), node("n2")], after, {"n1": "s1", "n2": "s2"})
    assert plan.commands == ("set server polycorn/s1 weight 3",)
    # a ready node never gets weight 0 (no traffic), and HAProxy caps weights at 256
    plan, _ = settle([node("n1", workers=0), node("n2", workers=1000)], after,
                     {"n1": "s1", "n2": "s2"})
    assert plan.commands == ("set server polycorn/s1 weight 1",
                             "set server polycorn/s2 weight 256")


def test_an_address_change_readdresses_the_nodes_slot():
    _, after = settle([node("n1")], slots())
    plan, _ = settle([node("n1", port=9001)], after, {"n1": "s1"})
    assert plan.commands == ("set server polycorn/s1 addr 10.0.0.1 port 9001",)


def test_ipv6_addresses_are_passed_bare_and_shown_in_brackets():
    n = FrontNode("n1", ("::1", 8001), Presence.READY, 2)
    plan, _ = settle([n], slots())
    assert plan.commands[0] == "set server polycorn/s1 addr ::1 port 8001"
    assert "ready [::1]:8001" in plan.changes[0].line()


# -- drain, stop, upgrade -------------------------------------------------------------------


def test_a_drain_request_drains_before_the_node_reports_it_and_undrain_restores():
    _, after = settle([node("n1"), node("n2")], slots())
    assignment = {"n1": "s1", "n2": "s2"}
    plan, after = settle([node("n1", drained=True), node("n2")], after, assignment)
    assert plan.commands == ("set server polycorn/s1 state drain",)
    assert plan.changes[0].reason == "drain requested"
    plan, after = settle([node("n1", Presence.DRAINING, drained=True), node("n2")], after,
                         assignment)
    assert plan.commands == ()
    plan, _ = settle([node("n1"), node("n2")], after, assignment)
    assert plan.commands == ("set server polycorn/s1 state ready",)


def test_stopping_and_declared_dead_nodes_go_to_maint_at_once():
    _, after = settle([node("n1"), node("n2"), node("n3")], slots())
    assignment = {"n1": "s1", "n2": "s2", "n3": "s3"}
    plan, after = settle([node("n1", Presence.STOPPING), node("n2"),
                          FrontNode("n3", None, Presence.DEAD)], after, assignment)
    assert plan.commands == ("set server polycorn/s1 state maint",
                             "set server polycorn/s3 state maint")
    assert [c.reason for c in plan.changes] == ["registry: stopping", "registry: declared dead"]
    # The address stays in the slot: a node that returns there takes it again.
    assert by_name(after)["s1"].endpoint == ("10.0.0.1", 8001)


def test_two_stopping_nodes_of_three_go_out_without_the_mass_lapse_guard():
    _, after = settle([node("n1"), node("n2"), node("n3")], slots())
    plan, _ = settle([node("n1", Presence.STOPPING), node("n2", Presence.STOPPING),
                      node("n3")], after, {"n1": "s1", "n2": "s2", "n3": "s3"})
    assert len(plan.commands) == 2 and plan.hold is None


def test_an_upgrading_node_stays_as_it_was_and_so_does_its_new_generation_booting():
    _, after = settle([node("n1"), node("n2")], slots())
    assignment = {"n1": "s1", "n2": "s2"}
    for presence, workers in ((Presence.UPGRADING, 4), (Presence.BOOTING, 0)):
        plan, _ = settle([node("n1", presence, workers=workers), node("n2")], after,
                         assignment)
        assert plan.commands == (), presence
    # upgrading while drained: stays drained
    _, drained = settle([node("n1", drained=True), node("n2")], after, assignment)
    plan, _ = settle([node("n1", Presence.UPGRADING, drained=True), node("n2")], drained,
                     assignment)
    assert plan.commands == ()


def test_an_upgrading_node_without_a_slot_is_put_in_it_serves():
    plan, _ = settle([node("n1", Presence.UPGRADING)], slots())
    assert plan.commands[-1] == "set server polycorn/s1 state ready"


# -- silence: lapsed nodes, vanished nodes, and the guard --------------------------------------


def three_ready():
    _, after = settle([node("n1"), node("n2"), node("n3")], slots())
    return after, {"n1": "s1", "n2": "s2", "n3": "s3"}


def test_one_lapsed_node_of_three_is_taken_out():
    after, assignment = three_ready()
    plan, _ = settle([node("n1"), node("n2"), node("n3", Presence.LAPSED, silent_ms=3100)],
                     after, assignment)
    assert plan.commands == ("set server polycorn/s3 state maint",)
    assert plan.changes[0].reason == "no heartbeat for 3.1s"
    assert plan.believed == ("n3",)


def test_a_mass_lapse_keeps_the_backend_until_the_silence_lasts_three_ttls():
    after, assignment = three_ready()
    lapsed = [node(n, Presence.LAPSED, silent_ms=4000) for n in ("n1", "n2", "n3")]
    plan = reconcile(BE, lapsed, after, assignment, TRUSTED)
    assert plan.commands == ()
    assert plan.hold is not None and plan.hold.cause.value == "mass_lapse"
    assert plan.hold.reason.startswith("3 of 3 nodes look dead at once")
    # two of three is a majority too
    plan = reconcile(BE, [node("n1"), *lapsed[1:]], after, assignment, TRUSTED)
    assert plan.commands == () and plan.hold is not None
    # silent for 3 node TTLs: believed (they are really gone)
    long = [dataclasses.replace(n, silent_ms=9000) for n in lapsed]
    plan, _ = settle(long, after, assignment)
    assert len(plan.commands) == 3 and plan.hold is None


def test_a_lapse_wave_after_nodes_taken_out_within_a_ttl_is_a_mass_lapse():
    # 3 nodes left of 5, 2 taken out (lapsed, then declared) within the last TTL: a third
    # node lapsing now makes 3 of 5 at once (the earlier wave counts, ha/guard.py)
    after, assignment = three_ready()
    nodes = [node("n1"), node("n2"), node("n3", Presence.LAPSED, silent_ms=3100)]
    plan = reconcile(BE, nodes, after, assignment,
                     dataclasses.replace(TRUSTED, recently_gone=2))
    assert plan.commands == () and plan.hold is not None
    assert plan.hold.reason.startswith("3 of 5 nodes look dead at once (2 of them")
    plan = reconcile(BE, nodes, after, assignment, TRUSTED)  # the earlier wave forgotten
    assert plan.commands == ("set server polycorn/s3 state maint",)


def test_recent_losses_count_within_the_window_and_not_those_still_counted():
    recent = RecentLosses()
    recent.note(("n1", "n2"), now=10.0)
    recent.note(("n3",), now=12.0)
    assert recent.count(12.5, window=3.0) == 3
    assert recent.count(12.5, window=3.0, besides={"n2"}) == 2  # lapsed again, or back
    assert recent.count(13.5, window=3.0) == 1  # n1 and n2 are 3.5 s old


def test_nothing_is_taken_out_while_the_syncs_own_redis_calls_fail_but_nodes_still_join():
    after, assignment = three_ready()
    failing = dataclasses.replace(TRUSTED, stable_for=1.5)
    nodes = [node("n1"), node("n2"), node("n3", Presence.LAPSED, silent_ms=20000), node("n4")]
    plan = reconcile(BE, nodes, after, assignment, failing)
    assert plan.hold is not None and plan.hold.cause.value == "redis_calls"
    assert plan.commands == ("set server polycorn/s4 addr 10.0.0.1 port 8004",
                             "set server polycorn/s4 weight 2",
                             "set server polycorn/s4 state ready")


def test_nothing_is_taken_out_just_after_redis_changed_under_the_sync():
    after, assignment = three_ready()
    changed = dataclasses.replace(TRUSTED, changed_ago=2.0)
    plan = reconcile(BE, [node("n1"), node("n2"), node("n3", Presence.LAPSED,
                                                        silent_ms=20000)],
                     after, assignment, changed)
    assert plan.commands == () and plan.hold.cause.value == "redis_changed"


def test_a_redis_that_comes_back_empty_never_empties_the_backend():
    after, assignment = three_ready()
    plan = reconcile(BE, [], after, assignment, TRUSTED)
    assert plan.commands == ()
    assert plan.absent == {"s1", "s2", "s3"}
    assert plan.hold.cause.value == "mass_lapse"
    assert plan.assignment == assignment  # still remembered, to name them in the log
    # the nodes re-register within a heartbeat: nothing moved
    plan, _ = settle([node("n1"), node("n2"), node("n3")], after, plan.assignment)
    assert plan.commands == ()
    # ... but if the registry stays empty for three node TTLs, the slots go out
    plan, _ = settle([], after, assignment, absent_ms={"s1": 9000, "s2": 9000, "s3": 9000})
    assert len(plan.commands) == 3
    assert plan.changes[0].line() == ("n1 slot s1: ready 10.0.0.1:8001 weight 2 -> maint "
                                      "10.0.0.1:8001 weight 2 (gone from the registry for "
                                      "9.0s)")
    assert plan.assignment == {}  # out and unknown: the slots are free again


def test_one_node_gone_from_the_registry_while_in_service_goes_out():
    """A node that vanished without the sync seeing it stop (its hash removed)."""
    after, assignment = three_ready()
    plan, _ = settle([node("n1"), node("n2")], after, assignment)
    assert plan.commands == ("set server polycorn/s3 state maint",)
    assert plan.changes[0].node == "n3"


def test_a_node_gone_from_the_registry_stays_while_haproxys_checks_see_it_up():
    """chaos --random 20: USR2 of the last node in rotation; its old agent deregistered
    before the new one registered, and the slot went out in that gap (76 HTTP 503)."""
    after, assignment = three_ready()
    up = [dataclasses.replace(s, op="up", checked=True) for s in after]
    plan, kept = settle([node("n1"), node("n2")], up, assignment)
    assert plan.commands == ()
    assert "n3 left in service (gone from the registry): HAProxy's checks see it up" \
        in plan.warnings
    # The new agent registers: nothing to do. Its checks fail instead: out.
    plan, _ = settle([node("n1"), node("n2"), node("n3")], kept, assignment)
    assert plan.commands == ()
    down = [dataclasses.replace(s, op="down") if s.name == "s3" else s for s in kept]
    plan, _ = settle([node("n1"), node("n2")], down, assignment)
    assert plan.commands == ("set server polycorn/s3 state maint",)


def test_a_serving_slot_nobody_claims_is_named_by_its_address():
    after, _ = three_ready()
    plan, _ = settle([node("n1"), node("n2")], after, {})  # a fresh sync
    assert plan.changes[0].node == "unknown node at 10.0.0.1:8003"


# -- slots: adoption, exhaustion, eviction -------------------------------------------------


def test_a_restarted_sync_adopts_the_slots_holding_each_nodes_address():
    after, assignment = three_ready()
    # the nodes come in another order and the sync remembers nothing
    plan = reconcile(BE, [node("n3"), node("n1"), node("n2")], after, {}, TRUSTED)
    assert plan.commands == ()
    assert plan.assignment == assignment


def test_a_restarted_haproxy_gets_every_slot_again():
    after, assignment = three_ready()
    plan, again = settle([node("n1"), node("n2"), node("n3")], slots(), assignment)
    assert len(plan.commands) == 9
    assert again == after


def test_when_slots_run_out_a_warning_and_no_ready_node_is_evicted():
    plan, after = settle([node("n1"), node("n2"), node("n3")], slots(2))
    assert plan.assignment == {"n1": "s1", "n2": "s2"}
    assert plan.warnings == ("no free slot for n3 (ready): all 2 slots hold nodes that serve "
                             "or boot; raise --slots (a ready node is never evicted)",)
    # a booting node does not take a ready node's slot either
    plan = reconcile(BE, [node("n1"), node("n2"), node("n4", Presence.BOOTING)], after,
                     plan.assignment, TRUSTED)
    assert plan.commands == () and len(plan.warnings) == 1


def test_ready_nodes_get_the_last_slots_before_booting_ones():
    plan, _ = settle([node("n1", Presence.BOOTING), node("n2")], slots(1))
    assert plan.assignment == {"n2": "s1"}
    assert "no free slot for n1 (booting)" in plan.warnings[0]


def test_a_new_node_takes_the_slot_of_a_node_that_is_out_when_none_is_free():
    plan, after = settle([node("n1"), node("n2")], slots(2))
    plan, after = settle([node("n1"), node("n2", Presence.STOPPING)], after, plan.assignment)
    plan, after = settle([node("n1"), node("n2", Presence.STOPPING), node("n3")], after,
                         plan.assignment)
    assert plan.assignment == {"n1": "s1", "n3": "s2"}
    assert plan.changes[0].reason == "registry: ready, 2 workers, slot taken from n2 (out)"
    assert by_name(after)["s2"].endpoint == ("10.0.0.1", 8003)


def test_unused_slots_are_taken_before_slots_holding_an_old_address():
    servers = slots(3)
    servers[0] = ServerState("s1", "10.0.0.9", 8009, Admin.MAINT, 2)  # a gone node's
    plan, _ = settle([node("n1")], servers)
    assert plan.assignment == {"n1": "s2"}


def test_a_node_whose_address_is_unknown_gets_no_slot():
    plan, _ = settle([FrontNode("n1", None, Presence.READY, 2), node("n2")], slots())
    assert plan.assignment == {"n2": "s1"}


def test_two_nodes_advertising_one_address_count_once():
    plan, _ = settle([node("n1"), node("n2", port=8001)], slots())
    assert plan.assignment == {"n1": "s1"}
    assert plan.warnings == ("n2 advertises the same address as n1 (10.0.0.1:8001): "
                             "left out",)


def test_a_slot_going_out_is_taken_out_before_it_is_readdressed():
    """A stale slot reused for a booting node: maint first, then the new address."""
    servers = [ServerState("s1", "10.0.0.9", 8009, Admin.READY, 2)]
    plan, _ = settle([node("n9", port=8009, presence=Presence.STOPPING),
                      node("n1", Presence.BOOTING)], servers)
    assert plan.commands == ("set server polycorn/s1 state maint",
                             "set server polycorn/s1 addr 10.0.0.1 port 8001")


def test_a_node_the_registry_gives_up_on_stays_while_haproxys_checks_see_it_up():
    """Declared dead or lapsed, but answering HAProxy's health checks (cut from Redis,
    Redis refusing writes, its registered master dead and a peer master serving): it
    stays in service, and goes out once the checks fail. chaos --random 2, 6, 8 --netns
    --front haproxy took every such node out at once: HTTP 503."""
    _, after = settle([node("n1"), node("n2"), node("n3")], slots())
    assignment = {"n1": "s1", "n2": "s2", "n3": "s3"}
    up = [dataclasses.replace(s, op="up", checked=True) for s in after]
    nodes = [FrontNode("n1", None, Presence.DEAD), node("n2", Presence.LAPSED, silent_ms=4000),
             node("n3")]
    plan, kept = settle(nodes, up, assignment)
    assert plan.commands == ()
    assert "n1 left in service (declared dead): HAProxy's checks see it up" in plan.warnings
    assert "n2 left in service (its heartbeat lapsed): HAProxy's checks see it up" \
        in plan.warnings
    # Its checks fail: out, as before.
    down = [dataclasses.replace(s, op="down") if s.name in ("s1", "s2") else s for s in kept]
    plan, _ = settle(nodes, down, assignment)
    assert plan.commands == ("set server polycorn/s1 state maint",
                             "set server polycorn/s2 state maint")
    # A stopping node leaves at once, whatever the checks say (it leaves on purpose).
    plan, _ = settle([node("n1", Presence.STOPPING), node("n2"), node("n3")], up, assignment)
    assert plan.commands == ("set server polycorn/s1 state maint",)
    # Without a health check HAProxy says "up" of anything: the registry decides.
    unchecked = [dataclasses.replace(s, checked=False) for s in up]
    plan, _ = settle(nodes, unchecked, assignment)
    assert plan.commands == ("set server polycorn/s1 state maint",
                             "set server polycorn/s2 state maint")
