"""The checker over hand-made histories: each invariant holds on a clean history and
is broken, with evidence naming the moment, by a history that violates it."""

from __future__ import annotations

import json

from loadtests import checker

TTL, LEASE = 3.0, 6.0
BOUND = TTL + LEASE + checker.SETTLE


def store(t, op, res, who="n1", pid=1, t1=None, **fields):
    return {"t": t, "t1": t + 0.01 if t1 is None else t1, "k": "store", "op": op, "res": res,
            "who": who, "pid": pid, "lineage": fields.pop("lineage", "run-a"), **fields}


def command(t, node, epoch, cid, accepted=True, pid=1):
    return {"t": t, "k": "command", "node": node, "epoch": epoch, "id": cid, "cmd": "set_workers",
            "accepted": accepted, "pid": pid}


def state(t, node, workers, target, pid, st="ready", configured=2, ceiling=4):
    return {"t": t, "k": "state", "node": node, "state": st, "workers": workers,
            "workers_target": target, "configured": configured, "max_workers": ceiling,
            "pid": pid}


def issued(t, cid, node, epoch, holder="n9"):
    return store(t, "grant_workers", True, who=holder, holder=holder, epoch=epoch, node=node,
                 command={"id": cid, "node": node, "epoch": epoch})


def names(invariants):
    return {i.name: i for i in invariants}


# -- fencing -------------------------------------------------------------------------------

def test_fencing_holds_for_rising_epochs_and_a_rejected_stale_command():
    h = [issued(1, "a", "n1", 1), issued(2, "b", "n1", 2), command(3, "n1", 1, "a"),
         command(4, "n1", 2, "b"), command(5, "n1", 1, "old", accepted=False)]
    inv = checker.fencing(h)
    assert inv.held, inv.evidence
    assert "2 commands applied" in inv.evidence and "1 rejected" in inv.evidence


def test_fencing_broken_by_an_older_epoch_applied_after_a_newer_one():
    h = [command(3, "n1", 2, "b"), command(4, "n1", 1, "a")]
    inv = checker.fencing(h)
    assert not inv.held
    assert "n1 applied set_workers a at epoch 1" in inv.evidence and "epoch 2" in inv.evidence


def test_fencing_broken_by_a_command_issued_before_one_already_applied():
    h = [issued(1, "first", "n1", 3), issued(2, "second", "n1", 3),
         command(3, "n1", 3, "second"), command(4, "n1", 3, "first")]
    inv = checker.fencing(h)
    assert not inv.held and "applied first" in inv.evidence


# -- max_unavailable -----------------------------------------------------------------------

def upgrade(t, node, res="issued", lineage="run-a", limit=1):
    return store(t, "issue_upgrade", res, node=node, rollout="r1", lineage=lineage,
                 max_unavailable=limit, holder="n9", epoch=1, command=None)


def finish(t, node, res="running"):
    return store(t, "finish_upgrade", res, node=node, rollout="r1", holder="n9", epoch=1)


def test_max_unavailable_holds_one_node_at_a_time():
    h = [upgrade(1, "n1"), finish(5, "n1"), upgrade(5.5, "n2"), finish(9, "n2", "done")]
    inv = checker.max_unavailable(h)
    assert inv.held and "at most 1 of 1" in inv.evidence


def test_max_unavailable_broken_by_two_slots_on_one_primary():
    h = [upgrade(1, "n1"), upgrade(2, "n2"), finish(5, "n1"), finish(6, "n2")]
    inv = checker.max_unavailable(h)
    assert not inv.held and "['n1', 'n2'] upgrading" in inv.evidence


def test_max_unavailable_is_judged_per_primary_lineage():
    # A failover lost the first slot: the new primary let a second node in. Two nodes
    # were down at once, but each primary kept its own bound: held, per lineage.
    h = [upgrade(1, "n1", lineage="run-a"), upgrade(2, "n2", lineage="run-b"),
         finish(5, "n1"), finish(6, "n2")]
    assert checker.max_unavailable(h).held


# -- no false death ------------------------------------------------------------------------

def declared(t, node, holder="n9"):
    return store(t, "declare_dead", True, who=holder, pid=9, holder=holder, epoch=2, node=node,
                 ttl_ms=3000, reason="no heartbeat for 3.1s")


def test_no_false_death_holds_when_the_node_went_silent_a_ttl_before():
    h = [store(1, "heartbeat", "refreshed", node="n1"), declared(4.5, "n1")]
    assert checker.no_false_death(h).held


def test_no_false_death_broken_by_a_declaration_within_a_ttl_of_a_heartbeat():
    h = [store(1, "heartbeat", "refreshed", node="n1"), declared(2.5, "n1")]
    inv = checker.no_false_death(h)
    assert not inv.held and "n1 declared dead by n9 at epoch 2" in inv.evidence


def test_no_false_death_holds_when_the_nodes_own_agent_reported_it_gone():
    h = [store(1, "heartbeat", "refreshed", node="n1"),
         store(1.5, "deregister", True, node="n1", incarnation=1), declared(2, "n1")]
    assert checker.no_false_death(h).held


def test_a_heartbeat_overlapping_the_declaration_is_not_a_certain_violation():
    h = [store(1, "heartbeat", "refreshed", node="n1", t1=2.6), declared(2.5, "n1")]
    assert checker.no_false_death(h).held


# -- capacity ------------------------------------------------------------------------------

def fault(t, phase, ident=1, label="kill-node n2", allowance=None):
    return {"t": t, "k": "fault", "phase": phase, "id": ident, "label": label,
            "allowance": allowance}


def final(t, alive):
    return {"t": t, "k": "final", "alive": alive, "load_started": 0.0}


def beats(node, pid, start, end):
    return [store(t, "heartbeat", "refreshed", who=node, pid=pid, node=node)
            for t in range(start, end)]


def test_capacity_held_when_the_survivors_cover_the_dead_node_in_time():
    h = [state(0.5, "n1", 2, 2, 1), state(0.5, "n2", 2, 2, 2), fault(10, "start"),
         fault(10, "end"), state(14, "n1", 2, 4, 1), state(15, "n1", 4, 4, 1), final(40, ["n1"]),
         *beats("n1", 1, 1, 40)]
    inv = checker.capacity_restored(sorted(h, key=lambda r: r["t"]), BOUND)
    assert inv.held and "4 workers on 1 ready nodes (wanted 4) 5.0s" in inv.evidence


def test_capacity_broken_when_the_survivor_never_reaches_its_target():
    h = [state(0.5, "n1", 2, 2, 1), state(0.5, "n2", 2, 2, 2), fault(10, "start"),
         fault(10, "end"), state(14, "n1", 3, 4, 1), final(40, ["n1"]), *beats("n1", 1, 1, 40)]
    inv = checker.capacity_restored(sorted(h, key=lambda r: r["t"]), BOUND)
    assert not inv.held and "n1 ready 3/4" in inv.evidence


def test_capacity_ignores_the_last_word_of_a_killed_agent():
    # n2's first agent died at 10 (its last state said ready); its new agent never
    # reported a state: n2 is not back, whatever the dead agent said.
    h = [state(0.5, "n1", 2, 2, 1), state(0.5, "n2", 2, 2, 2), *beats("n2", 2, 1, 10),
         fault(10, "start"), fault(12, "end"), final(40, ["n1", "n2"]), *beats("n1", 1, 1, 40)]
    inv = checker.capacity_restored(sorted(h, key=lambda r: r["t"]), BOUND)
    assert not inv.held and "no state from n2" in inv.evidence


def test_capacity_takes_a_nodes_state_from_its_current_agent_after_an_upgrade():
    # chaos --random 2 (CI, once in four): n1's USR2 started a new agent (pid 7) that
    # registered and said 'ready' before the old generation's agent (pid 1) said
    # 'stopping'. The old agent then left; the node's state is the new agent's.
    h = [state(0.5, "n1", 2, 2, 1), store(0.4, "register", 1, pid=1, node="n1"),
         *beats("n1", 1, 1, 9), fault(8, "start", label="usr2 n1"),
         store(8.2, "register", 2, pid=7, node="n1"), state(8.5, "n1", 2, 2, 7),
         state(8.8, "n1", 2, 2, 1, st="stopping"), state(8.9, "n1", 0, 2, 1, st="stopping"),
         fault(9, "end"), *beats("n1", 7, 9, 40), final(40, ["n1"])]
    inv = checker.capacity_restored(sorted(h, key=lambda r: r["t"]), BOUND)
    assert inv.held, inv.evidence
    assert "2 workers on 1 ready nodes" in inv.evidence


def test_capacity_ignores_what_the_nodes_said_during_the_teardown():
    h = [state(0.5, "n1", 2, 2, 1), fault(10, "start"), state(10.5, "n1", 1, 2, 1),
         fault(11, "end"), final(20, ["n1"]), state(20.1, "n1", 2, 2, 1),
         *beats("n1", 1, 1, 21)]
    inv = checker.capacity_restored(sorted(h, key=lambda r: r["t"]), BOUND)
    assert not inv.held and "n1 ready 1/2" in inv.evidence


def served(t, address, ok=True):
    return {"t": t, "t1": t + 0.01, "k": "http", "node": address, "ok": ok,
            "indeterminate": False}


def test_capacity_without_a_registry_is_judged_by_the_requests_the_survivors_answered():
    # --redis-mode none: no agent, so no state record ever. The survivor answering after
    # the last fault is the evidence (a capacity "no state from n1" failed every such run).
    no_registry = {**final(40, ["n1"]), "registry": False,
                   "addresses": {"n1": "127.0.0.1:8001", "n2": "127.0.0.1:8002"}}
    h = [served(1, "127.0.0.1:8001"), served(1, "127.0.0.1:8002"), fault(10, "start"),
         fault(10, "end"), served(11, "127.0.0.1:8002", ok=False),
         served(12, "127.0.0.1:8001"), served(13, "127.0.0.1:8001"), no_registry]
    inv = checker.capacity_restored(h, BOUND)
    assert inv.held and "n1 2" in inv.evidence, inv.evidence
    # A survivor that answered nothing after the fault has not shown it serves.
    h = [r for r in h if not (r.get("k") == "http" and r["t"] > 10 and r["ok"])]
    inv = checker.capacity_restored(h, BOUND)
    assert not inv.held and "n1 answered no request" in inv.evidence, inv.evidence


# -- failed requests -----------------------------------------------------------------------

def http(t, ok=True, indeterminate=False):
    return {"t": t, "t1": t + 0.05, "k": "http", "ok": ok, "indeterminate": indeterminate}


def test_failures_within_the_sum_of_overlapping_allowances():
    h = [fault(10, "start", 1, "kill-worker n1", 1), fault(10, "end", 1),
         fault(12, "start", 2, "kill-worker n2", 1), fault(12, "end", 2),
         http(11, ok=False), http(13, ok=False), http(30)]
    inv = checker.failures_within_allowance(sorted(h, key=lambda r: r["t"]), BOUND)
    assert inv.held and "2 of 3 requests failed" in inv.evidence and "2/2" in inv.evidence


def test_failures_beyond_the_allowance_or_outside_any_fault_break_it():
    h = [fault(10, "start", 1, "usr2 n1", 0), fault(11, "end", 1),
         http(12, ok=False, indeterminate=True), http(2, ok=False)]
    inv = checker.failures_within_allowance(sorted(h, key=lambda r: r["t"]), BOUND)
    assert not inv.held
    assert "1 failed (1 indeterminate) during usr2 n1, allowed 0" in inv.evidence
    assert "1 failed (0 indeterminate) outside every fault" in inv.evidence


def test_while_every_node_is_out_at_once_any_loss_is_allowed():
    def out(t, end, ident, node, action):
        return [{**fault(t, "start", ident, f"{action} {node}", 0), "action": action,
                 "node": node}, fault(end, "end", ident)]
    h = [*out(10, 14, 1, "n1", "kill-node"), *out(11, 13, 2, "n2", "drain-node"),
         http(12, ok=False), {**final(30, ["n1", "n2"]), "nodes": ["n1", "n2"]}]
    inv = checker.failures_within_allowance(sorted(h, key=lambda r: r["t"]), BOUND)
    assert inv.held and "1 more while every node was out at once" in inv.evidence
    h = [*out(10, 11, 1, "n1", "kill-node"), *out(12, 13, 2, "n2", "drain-node"),
         http(12, ok=False), {**final(30, ["n1", "n2"]), "nodes": ["n1", "n2"]}]
    inv = checker.failures_within_allowance(sorted(h, key=lambda r: r["t"]), BOUND)
    assert not inv.held and "allowed 0" in inv.evidence


def test_only_the_moments_every_node_is_out_are_excused_not_their_whole_span():
    """chaos --random 14: faults every few seconds merged the whole run into one span,
    and one moment with every node out lifted the bound for all of it (940 failed, the
    860 of them while n1 was killed, n2 drained and n3 still booting, 80 elsewhere)."""
    def out(t, end, ident, node, action):
        return [{**fault(t, "start", ident, f"{action} {node}", 0), "action": action,
                 "node": node}, fault(end, "end", ident)]
    end = {**final(60, ["n1", "n2"]), "nodes": ["n1", "n2"]}
    h = [*out(10, 14, 1, "n1", "kill-node"), *out(11, 13, 2, "n2", "drain-node"),
         fault(20, "start", 3, "usr2 n1", 0), fault(20, "end", 3),
         http(12, ok=False), http(14.5, ok=False), end]
    inv = checker.failures_within_allowance(sorted(h, key=lambda r: r["t"]), BOUND)
    assert inv.held, inv.evidence  # 14.5: within ALL_OUT_SETTLE of the last moment out
    late = http(13 + checker.ALL_OUT_SETTLE + 1, ok=False)  # n2 back, same span
    inv = checker.failures_within_allowance(sorted([*h, late], key=lambda r: r["t"]), BOUND)
    assert not inv.held and "1 failed (0 indeterminate) during" in inv.evidence, inv.evidence
    assert "2 more while every node was out at once (t=11.000-13.000)" in inv.evidence


def test_the_runner_says_which_faults_take_a_node_out():
    """chaos --random 8: n1 killed (booting after its restart until its fault ended),
    n3 drained, and n2 slowed past HAProxy's check timeout: every node out at once, 100
    HTTP 503. The runner's `takes_out` says a slow-front took its node out; one that
    stays under the check timeout does not."""
    def out(t, end, ident, node, action, takes_out):
        return [{**fault(t, "start", ident, f"{action} {node}", 0), "action": action,
                 "node": node, "takes_out": takes_out}, fault(end, "end", ident)]
    end = {**final(30, ["n1", "n2", "n3"]), "nodes": ["n1", "n2", "n3"]}
    h = [*out(10, 14, 1, "n1", "kill-node", True), *out(11, 13, 2, "n3", "drain-node", True),
         *out(11, 15, 3, "n2", "slow-front", True), http(12, ok=False), end]
    inv = checker.failures_within_allowance(sorted(h, key=lambda r: r["t"]), BOUND)
    assert inv.held and "1 more while every node was out at once" in inv.evidence, inv.evidence
    h = [*out(10, 14, 1, "n1", "kill-node", True), *out(11, 13, 2, "n3", "drain-node", True),
         *out(11, 15, 3, "n2", "slow-front", False), http(12, ok=False), end]
    inv = checker.failures_within_allowance(sorted(h, key=lambda r: r["t"]), BOUND)
    assert not inv.held and "allowed 0" in inv.evidence, inv.evidence


def test_a_slow_front_takes_its_node_out_when_a_check_cannot_make_the_round_trip():
    from polycorn.ha.haproxy.config import Checks

    from loadtests.latency_faults import takes_node_out
    from loadtests.scenario import Fault
    half = Checks().timeout_ms / 2
    assert takes_node_out(Fault(at=1, action="slow-front", node="n1", delay=half))
    assert not takes_node_out(Fault(at=1, action="slow-front", node="n1", delay=half - 1))
    assert not takes_node_out(Fault(at=1, action="slow-redis", node="n1", delay=2000))


def test_a_node_that_joins_later_is_out_until_it_is_ready():
    """Random seed 7 (90 s, --netns --front haproxy): n1 paused, n2 drained, n3 cut from
    the front at once, 893 HTTP 503s (no server in rotation); n4 joined after that, and
    its name in the final node list hid that every node was out."""
    def out(t, end, ident, node, action):
        return [{**fault(t, "start", ident, f"{action} {node}", 0), "action": action,
                 "node": node}, fault(end, "end", ident)]
    three = [*out(10, 14, 1, "n1", "pause-node"), *out(10, 20, 2, "n2", "drain-node"),
             *out(11, 14, 3, "n3", "cut-front"), http(12, ok=False)]
    joined = [{**fault(13, "start", 4, "join-node", 0), "action": "join-node", "node": "n4"},
              fault(19, "end", 4), {**final(30, ["n1", "n2", "n3", "n4"]),
                                    "nodes": ["n1", "n2", "n3", "n4"]}]
    inv = checker.failures_within_allowance(sorted(three + joined, key=lambda r: r["t"]),
                                            BOUND)
    assert inv.held and "1 more while every node was out at once" in inv.evidence, inv.evidence
    # Once ready, the new node serves: every other node out is no longer every node.
    late = [*out(20, 24, 5, "n1", "pause-node"), *out(20, 24, 6, "n3", "cut-front"),
            *out(21, 24, 7, "n2", "drain-node"), http(22, ok=False)]
    inv = checker.failures_within_allowance(sorted(late + joined, key=lambda r: r["t"]),
                                            BOUND)
    assert not inv.held and "allowed 0" in inv.evidence


def test_dual_leadership_counts_two_leaders_renewing_on_two_primaries():
    def renew(t, who, epoch, lineage):
        return store(t, "renew_lease", True, who=who, epoch=epoch, holder=who, lineage=lineage)
    split = [renew(10, "n1", 2, "run-a"), renew(11, "n1", 2, "run-a"),
             renew(10.5, "n3", 3, "run-b"), renew(20, "n3", 3, "run-b")]
    seconds, evidence = checker.dual_leadership(split)
    assert 1.0 <= seconds <= 1.6 and "n1 epoch 2 on run-a with n3 epoch 3 on run-b" in evidence
    moved = [renew(10, "n1", 2, "run-a"), renew(10.5, "n1", 2, "run-b")]
    assert checker.dual_leadership(moved) == (0.0, "never two leaders at once")


# -- leftovers and the whole check ------------------------------------------------------------

def test_nothing_left_behind():
    assert checker.nothing_left({"processes": [], "namespaces": []}).held
    inv = checker.nothing_left({"processes": [123], "namespaces": ["pcn-ab-n1"]})
    assert not inv.held and "pcn-ab-n1" in inv.evidence and "123" in inv.evidence


def test_load_history_merges_files_in_time_order_and_skips_a_torn_line(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps(http(2)) + "\n" + '{"t": 3, "k"')
    (tmp_path / "b.jsonl").write_text(json.dumps(http(1)) + "\n")
    assert [r["t"] for r in checker.load_history(tmp_path)] == [1, 2]


def test_check_returns_one_invariant_per_claim_of_the_issue():
    h = [state(0.5, "n1", 2, 2, 1), *beats("n1", 1, 1, 30), http(5), final(30, ["n1"])]
    invariants = checker.check(sorted(h, key=lambda r: r["t"]), node_ttl=TTL, lease=LEASE,
                               leftovers={"processes": []})
    assert [i.name for i in invariants] == ["fencing", "max_unavailable", "no_false_death",
                                            "capacity", "failures_within_allowance",
                                            "nothing_left_behind"]
    assert all(i.held for i in invariants), [i.as_json() for i in invariants]
