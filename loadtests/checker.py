"""The checker: invariants judged over a chaos run's history, after the run.

The history is what each process appended itself (ha/history.py): the agents'
store writes and fenced commands, their nodes' state changes, the load
generator's HTTP results, the runner's faults. Every function here is pure: a
list of records in, one Invariant out, with the evidence a reader needs to find
the moment in the history. Times are CLOCK_MONOTONIC seconds. An operation is an
interval [t, t1]; the checker only calls a violation certain when every order of
execution inside those intervals violates (Jepsen's rule for concurrent histories),
and counts a timed-out request as indeterminate, never as a success.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Record = dict[str, Any]
SETTLE = 5.0  # seconds beyond node TTL + lease that the cluster gets after a fault
TAKES_NODE_OUT = frozenset({"kill-node", "pause-node", "drain-node", "cut-front"})
LOOK_EVERY = 0.5  # seconds between two moments at which capacity is judged
FRESH = 2.0  # an agent's state counts while it heartbeated this recently (2 heartbeats)
# After every node was out at once, the front needs `rise` checks `downinter` apart
# (2 x 0.5 s, ha/haproxy/config.py Checks) and the sync's next pass to send traffic again.
ALL_OUT_SETTLE = 2.0


@dataclass(frozen=True)
class Invariant:
    name: str
    held: bool
    evidence: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "held": self.held, "evidence": self.evidence}


def load_history(directory: Path) -> list[Record]:
    """Every process's lines, merged in time order (a torn last line is skipped)."""
    records = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return sorted(records, key=lambda r: r["t"])


def _end(r: Record) -> float:
    return float(r.get("t1", r["t"]))


def _stores(history: list[Record], op: str) -> list[Record]:
    return [r for r in history if r.get("k") == "store" and r.get("op") == op]


# -- 1. fencing ---------------------------------------------------------------------------

def fencing(history: list[Record]) -> Invariant:
    """On every node the epochs of applied commands never decrease, and no command
    issued (surely) before one already applied is applied after it."""
    issued: dict[str, Record] = {}
    for r in history:
        command = r.get("command") if r.get("k") == "store" else None
        if command and r.get("res") not in (False, "unavailable", "not_leader", "no_slot"):
            issued[command["id"]] = r
    applied: dict[str, list[Record]] = defaultdict(list)
    rejected = 0
    for r in history:
        if r.get("k") == "command":
            if r.get("accepted"):
                applied[r["node"]].append(r)
            else:
                rejected += 1
    problems = []
    for node, commands in sorted(applied.items()):
        for before, after in zip(commands, commands[1:], strict=False):
            if after["epoch"] < before["epoch"]:
                problems.append(f"{node} applied {after['cmd']} {after['id']} at epoch "
                                f"{after['epoch']} (t={after['t']:.3f}) after {before['cmd']} "
                                f"{before['id']} at epoch {before['epoch']}")
        for i, later in enumerate(commands):
            mine = issued.get(later["id"])
            for earlier in commands[:i]:
                theirs = issued.get(earlier["id"])
                if mine and theirs and _end(mine) < theirs["t"]:
                    problems.append(f"{node} applied {later['id']} (issued t={mine['t']:.3f}) "
                                    f"after {earlier['id']} (issued later, t={theirs['t']:.3f})")
    total = sum(len(c) for c in applied.values())
    if problems:
        return Invariant("fencing", False, "; ".join(problems[:5]))
    return Invariant("fencing", True, f"{total} commands applied on {len(applied)} nodes in "
                                      f"epoch order, {rejected} rejected by the fence")


# -- 2. --max-unavailable -------------------------------------------------------------

def max_unavailable(history: list[Record]) -> Invariant:
    """At most max_unavailable nodes hold an upgrade slot at once, per rollout and per
    Redis primary lineage (the run id the issuing leader saw): a failover that loses
    writes starts a new lineage, and the bound is enforced by Lua inside one primary."""
    events = []  # (time, +1/-1, rollout, lineage, node, limit)
    opened: dict[tuple[str, str], str] = {}
    for r in history:
        if r.get("k") != "store":
            continue
        if r.get("op") == "issue_upgrade" and r.get("res") == "issued":
            # Surely held from the end of the issuing call.
            events.append((_end(r), 1, r["rollout"], r.get("lineage", ""), r["node"],
                           r.get("max_unavailable") or 1))
            opened[(r["rollout"], r["node"])] = r.get("lineage", "")
        elif r.get("op") == "finish_upgrade" and r.get("res") in ("running", "done", "failed"):
            lineage = opened.pop((r["rollout"], r["node"]), None)
            if lineage is not None:  # surely released no later than the call's start
                events.append((r["t"], -1, r["rollout"], lineage, r["node"], 0))
    if not events:
        return Invariant("max_unavailable", True, "no rolling upgrade issued a node")
    events.sort(key=lambda e: (e[0], e[1]))  # a release before an issue at the same time
    held: dict[tuple[str, str], set[str]] = defaultdict(set)
    limits: dict[tuple[str, str], int] = {}
    peak: dict[tuple[str, str], int] = defaultdict(int)
    problems = []
    for t, step, rollout, lineage, node, limit in events:
        key = (rollout, lineage)
        if step > 0:
            limits[key] = limit
            held[key].add(node)
            peak[key] = max(peak[key], len(held[key]))
            if len(held[key]) > limit:
                problems.append(f"rollout {rollout} lineage {lineage[:8]}: {sorted(held[key])} "
                                f"upgrading at t={t:.3f}, max_unavailable {limit}")
        else:
            held[key].discard(node)
    if problems:
        return Invariant("max_unavailable", False, "; ".join(problems[:5]))
    return Invariant("max_unavailable", True, "; ".join(
        f"rollout {k[0]} lineage {k[1][:8] or '?'}: at most {peak[k]} of {limits[k]} at once"
        for k in sorted(peak)))


# -- 3. no false death ------------------------------------------------------------------

_BEATS = ("refreshed", "rejoined")


def no_false_death(history: list[Record]) -> Invariant:
    """No node declared dead while it was heartbeating to a reachable Redis: no
    successful heartbeat (or registration) of it surely before the declaration and
    surely within the TTL of it, unless its own agent deregistered in between (its
    master gone: the agent itself said the node was lost)."""
    beats: dict[str, list[Record]] = defaultdict(list)
    for r in history:
        if r.get("k") != "store":
            continue
        if (r.get("op") == "heartbeat" and r.get("res") in _BEATS) or (
                r.get("op") == "register" and isinstance(r.get("res"), int)):
            beats[r["node"]].append(r)
    left = defaultdict(list)  # the node's own agent said it was gone (master lost)
    for r in _stores(history, "deregister"):
        if r.get("res") is not False:
            left[r["node"]].append(r)
    deaths = [r for r in _stores(history, "declare_dead") if r.get("res") is True]
    problems = []
    for d in deaths:
        ttl = d.get("ttl_ms", 3000) / 1000
        for b in beats.get(d["node"], []):
            gone = any(b["t"] <= g["t"] <= d["t"] for g in left.get(d["node"], []))
            if not gone and _end(b) <= d["t"] and _end(d) - b["t"] < ttl:
                problems.append(f"{d['node']} declared dead by {d['holder']} at epoch "
                                f"{d['epoch']} (t={d['t']:.3f}, {d.get('reason')}) "
                                f"{_end(d) - b['t']:.2f}s after its heartbeat {b.get('res')} "
                                f"at t={b['t']:.3f} (TTL {ttl:g}s)")
                break
    if problems:
        return Invariant("no_false_death", False, "; ".join(problems[:5]))
    return Invariant("no_false_death", True, f"{len(deaths)} declarations, none within the "
                                             f"TTL of a successful heartbeat")


# -- 4. capacity restored ------------------------------------------------------------------

def capacity_restored(history: list[Record], bound: float) -> Invariant:
    """Within `bound` seconds (node TTL + lease + SETTLE) after the last fault ended,
    every node alive at the end is ready and runs its target, and the targets cover
    the configured workers (or every survivor is at its ceiling)."""
    final = next((r for r in reversed(history) if r.get("k") == "final"), None)
    faults = [r for r in history if r.get("k") == "fault"]
    if final is None:
        return Invariant("capacity", False, "the history has no final record of the run")
    last = max((r["t"] for r in faults), default=None)
    alive = set(final["alive"])
    if not alive:
        return Invariant("capacity", False, "no node was alive at the end")
    start = last if last is not None else final["load_started"]
    # What the nodes said after the load ended is the teardown, not the cluster's state.
    deadline = min(start + bound, final["t"])
    if final.get("registry") is False:
        return _capacity_from_requests(history, final, alive, start, deadline)
    # What the cluster owes: every node that ever served, its configured workers (a
    # dead node's share goes to the survivors, within their ceilings).
    configured = {r["node"]: r["configured"] for r in history if r.get("k") == "state"}
    expected = sum(configured.values())
    steps = int(bound / LOOK_EVERY)
    moments = sorted({t for i in range(steps + 1) if (t := start + i * LOOK_EVERY) <= deadline} | {
        r["t"] for r in history
        if r.get("k") == "state" and r["node"] in alive and start < r["t"] <= deadline})
    candidates = [(t, _states_at(history, alive, t)) for t in moments]
    for t, seen in candidates:
        ok, why = _capacity_ok(seen, alive, expected)
        if ok:
            return Invariant("capacity", True, f"{why} {max(0.0, t - start):.1f}s after the "
                                               f"last fault (bound {bound:g}s)")
    _, why = _capacity_ok(_states_at(history, alive, deadline), alive, expected)
    ended = final["t"] - start
    tail = f"; the run ended {ended:.1f}s after the last fault" if ended < bound else ""
    return Invariant("capacity", False, f"not restored within {bound:g}s of the last fault: "
                                        f"{why}{tail}")


def _capacity_from_requests(history: list[Record], final: Record, alive: set[str],
                            start: float, deadline: float) -> Invariant:
    """Nodes without a registry (--redis-mode none) run no agent, so no worker counts are
    ever reported: the only witness left is the load. Each node alive at the end must
    have answered a request sent after the last fault ended (and before the deadline)."""
    addresses = final.get("addresses") or {}
    answered = {n: sum(1 for r in history if r.get("k") == "http" and r.get("ok")
                       and r.get("node") == addresses.get(n) and start <= r["t"] <= deadline)
                for n in sorted(alive)}
    silent = [n for n, count in answered.items() if not count]
    if silent:
        return Invariant("capacity", False, f"no registry to report workers, and "
                                            f"{', '.join(silent)} answered no request after "
                                            f"the last fault")
    return Invariant("capacity", True, "no registry to report workers (no agents): judged "
                                       "by the load, every node alive at the end answered "
                                       "after the last fault (" + ", ".join(
                                           f"{n} {c}" for n, c in answered.items()) + ")")


def _states_at(history: list[Record], alive: set[str], when: float,
               fresh: float = FRESH) -> dict[str, Record]:
    """Each node's latest state at `when`, as its current agent said it: among the node's
    agents that heartbeated within `fresh` seconds before then (a killed node's last word
    is not its state), the one registered last. After a USR2 the old generation's agent
    can report 'stopping' after the new one reported 'ready' (the new agent may start
    first): that is the old generation's state, not the node's (chaos --random 2, 'no
    state from n1' once in four CI runs)."""
    latest: dict[tuple[str, int], Record] = {}  # (node, agent pid) -> its latest state
    beat: dict[int, float] = {}
    registered: dict[int, float] = {}
    for r in history:
        if r["t"] > when:
            break
        if r.get("k") == "state" and r["node"] in alive:
            latest[(r["node"], r["pid"])] = r
        elif r.get("op") in ("heartbeat", "register") and r.get("res") not in (
                "unavailable", "superseded", "declared_dead"):
            beat[r["pid"]] = _end(r)
            if r["op"] == "register":
                registered[r["pid"]] = r["t"]
    chosen: dict[str, tuple[tuple[float, float], Record]] = {}
    for (node, pid), s in latest.items():
        if when - beat.get(pid, -1e9) > fresh:
            continue
        rank = (registered.get(pid, float("-inf")), s["t"])
        if node not in chosen or rank > chosen[node][0]:
            chosen[node] = (rank, s)
    return {node: s for node, (_, s) in chosen.items()}


def _capacity_ok(states: dict[str, Record], alive: set[str], expected: int) -> tuple[bool, str]:
    missing = sorted(alive - set(states))
    if missing:
        return False, f"no state from {', '.join(missing)}"
    short = [f"{n} {s['state']} {s['workers']}/{s['workers_target']}"
             for n, s in sorted(states.items())
             if s["state"] != "ready" or s["workers"] != s["workers_target"]]
    if short:
        return False, "; ".join(short)
    running = sum(s["workers"] for s in states.values())
    ceiling = sum(s.get("max_workers") or s["workers"] for s in states.values())
    wanted = min(expected, ceiling)
    if running < wanted:
        return False, f"{running} workers running, {wanted} wanted"
    return True, f"{running} workers on {len(states)} ready nodes (wanted {wanted})"


# -- 5. failed requests within the allowances -----------------------------------------------

def failures_within_allowance(history: list[Record], settle: float) -> Invariant:
    """Failed requests stay within the sum of the allowances of the faults that overlap:
    each fault covers [start, end + settle]; overlapping covers merge into one span whose
    allowance is the sum (unbounded if any fault's is); a failure outside every span has
    an allowance of zero. Behind a front every host-level fault is bounded by what
    HAProxy's log shows on its node (loadtests/front.py). Without one, kill-node,
    pause-node and lossy-node stay unbounded: Locust's users keep sending to their
    node, and nothing but the failures themselves counts what they sent it. A failure
    while every node is out at once (and ALL_OUT_SETTLE after) is not counted: nothing
    could serve it; only those windows are excused, not the rest of their span."""
    starts = {r["id"]: r for r in history if r.get("k") == "fault" and r.get("phase") == "start"}
    ends = {r["id"]: r for r in history if r.get("k") == "fault" and r.get("phase") == "end"}
    # An allowance known only after the run (a pause behind a front) comes last.
    later = {r["id"]: r["allowance"] for r in history if r.get("k") == "allowance"}
    covers = sorted((s["t"], _end(ends.get(i, s)) + settle, later.get(i, s.get("allowance")),
                     s["label"]) for i, s in starts.items())
    final = next((r for r in reversed(history) if r.get("k") == "final"), {})
    nodes = set(final.get("nodes") or [])
    # An allowance presumes survivors: while every node is out at once (killed until it
    # was ready again, paused, drained, cut from the front, or slowed past HAProxy's
    # check timeout: the runner says which, `takes_out`) nothing can serve, and the span
    # may lose anything.
    outs = sorted((s["t"], _end(ends.get(i, s)), s["node"]) for i, s in starts.items()
                  if s.get("takes_out", s.get("action") in TAKES_NODE_OUT) and s.get("node"))
    # A node that joined is out of it until it was ready (its fault's end): the final
    # node list names it, but it served nothing before (random seed 7, 90 s).
    outs += [(float("-inf"), _end(ends.get(i, s)), s["node"]) for i, s in starts.items()
             if s.get("action") == "join-node" and s.get("node")]
    spans: list[list[Any]] = []  # [start, end, allowance or None, labels, failed, unknown]
    for a, b, allowance, label in covers:
        if spans and a <= spans[-1][1]:
            span = spans[-1]
            span[1] = max(span[1], b)
            span[2] = None if span[2] is None or allowance is None else span[2] + allowance
            span[3].append(label)
        else:
            spans.append([a, b, allowance, [label], 0, 0])
    windows = _all_out_windows(outs, nodes)
    outside, outside_unknown, total, failed, excused = 0, 0, 0, 0, 0
    for r in history:
        if r.get("k") != "http":
            continue
        total += 1
        if r.get("ok"):
            continue
        failed += 1
        if any(r["t"] <= b + ALL_OUT_SETTLE and _end(r) >= a for a, b in windows):
            excused += 1
            continue
        span = next((s for s in spans if r["t"] <= s[1] and _end(r) >= s[0]), None)
        if span is None:
            outside += 1
            outside_unknown += bool(r.get("indeterminate"))
        else:
            span[4] += 1
            span[5] += bool(r.get("indeterminate"))
    problems = [f"{s[4]} failed ({s[5]} indeterminate) during {' + '.join(s[3])}, allowed "
                f"{s[2]}" for s in spans if s[2] is not None and s[4] > s[2]]
    if outside:
        problems.append(f"{outside} failed ({outside_unknown} indeterminate) outside every "
                        f"fault")
    all_out = "" if not windows else (
        f"; {excused} more while every node was out at once ("
        + ", ".join(f"t={a:.3f}-{b:.3f}" for a, b in windows[:4]) + ")")
    summary = (f"{failed} of {total} requests failed over {len(spans)} overlapping fault "
               f"spans: " + ", ".join(f"{s[4]}/{'any' if s[2] is None else s[2]}"
                                      for s in spans) + all_out)
    if problems:
        return Invariant("failures_within_allowance", False, "; ".join(problems) + all_out)
    return Invariant("failures_within_allowance", True, summary)


def _all_out_windows(outs: list[tuple[float, float, str]], nodes: set[str]
                     ) -> list[tuple[float, float]]:
    """The intervals during which every node is out at once, merged. Who is out changes
    only at an interval's ends, so the middle of each piece between two ends says."""
    if not nodes:
        return []
    ends = sorted({t for a, b, _ in outs for t in (a, b) if t != float("-inf")})
    windows: list[tuple[float, float]] = []
    for a, b in zip(ends, ends[1:], strict=False):
        middle = (a + b) / 2
        if nodes <= {n for s, e, n in outs if s <= middle <= e}:
            if windows and windows[-1][1] >= a:
                windows[-1] = (windows[-1][0], b)
            else:
                windows.append((a, b))
    return windows


# -- 6. nothing left behind ---------------------------------------------------------------

def nothing_left(leftovers: dict[str, list[Any]]) -> Invariant:
    """No process, fd or network namespace of the run survives its cleanup."""
    left = {k: v for k, v in leftovers.items() if v}
    if left:
        return Invariant("nothing_left_behind", False,
                         "; ".join(f"{k}: {v}" for k, v in sorted(left.items())))
    looked = ", ".join(sorted(leftovers)) or "nothing"
    return Invariant("nothing_left_behind", True, f"none left after the cleanup ({looked} "
                                                  f"looked for)")


def dual_leadership(history: list[Record], renew: float = 1.0) -> tuple[float, str]:
    """Seconds during which two leaders held leases on two Redis primaries at once (a
    split brain), from the leaders' successful renewals: each proves its lease for the
    `renew` interval that follows. A fact for the report, not an invariant: Sentinel
    allows it, fencing bounds what it can do (each primary has its own queues)."""
    held: dict[str, list[tuple[float, float, str, int]]] = defaultdict(list)
    for r in history:
        if r.get("k") == "store" and r.get("op") in ("renew_lease", "acquire_lease") \
                and r.get("res") not in (False, None, "unavailable") and r.get("lineage"):
            held[r["lineage"]].append((r["t"], _end(r) + renew, r["who"],
                                       int(r.get("epoch") or r.get("res") or 0)))
    lineages = sorted(held)
    overlap, pairs = 0.0, set()
    for i, a in enumerate(lineages):
        for b in lineages[i + 1:]:
            for s1, e1, w1, ep1 in held[a]:
                for s2, e2, w2, ep2 in held[b]:
                    both = min(e1, e2) - max(s1, s2)
                    if both > 0 and w1 != w2:  # one leader moving to the new primary is not two
                        overlap += both
                        pairs.add(f"{w1} epoch {ep1} on {a[:6]} with {w2} epoch {ep2} on {b[:6]}")
    return round(overlap, 2), "; ".join(sorted(pairs)[:4]) or "never two leaders at once"


def check(history: list[Record], *, node_ttl: float, lease: float,
          leftovers: dict[str, list[Any]]) -> list[Invariant]:
    bound = node_ttl + lease + SETTLE
    return [fencing(history), max_unavailable(history), no_false_death(history),
            capacity_restored(history, bound), failures_within_allowance(history, bound),
            nothing_left(leftovers)]
