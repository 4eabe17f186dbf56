"""From Locust's per-second timeline and the fault records to a verdict, JSON and text.

The faults cut the run into windows: a fault's window runs from the second it
happened in to the second the next fault happened in (or the end of the load),
so every failed request belongs to exactly one fault, or to "before any fault".
Recovery is the time from the fault until the window's seconds are healthy for
good: no failure and at least RECOVERED_SHARE of the throughput before it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

RECOVERED_SHARE = 0.8  # of the baseline requests/s
PAUSE_THROUGHPUT_SHARE = 0.5  # behind a front, of the offered requests/s while a node is hung
JOIN_SERVES_WITHIN = 2.0  # behind a front, seconds from ready to a joining node's first request
BASELINE_SECONDS = 5  # full seconds before a fault that set its baseline


@dataclass(frozen=True)
class Impact:
    first_s: int  # window, as Unix seconds [first_s, end_s)
    end_s: int
    requests: int
    failed: int
    retried: int
    errors: dict[str, int]
    baseline_rps: float | None
    min_rps: int | None
    p95_max_ms: float | None
    slowest_ms: float | None  # the slowest request: a few stalled ones hide below any p95
    recovery_s: float | None  # None: still impaired when the window ended


def every_second(seconds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The timeline with a zero line for each second in which no request completed
    (a stalled cluster), so that plots and sums see the gap."""
    if not seconds:
        return []
    by_t = {s["t"]: s for s in seconds}
    empty = {"requests": 0, "failures": 0, "retried": 0, "p50": None, "p95": None,
             "p99": None, "max": None, "errors": {}, "nodes": {}}
    return [by_t.get(t) or {"t": t, **empty} for t in range(seconds[0]["t"], seconds[-1]["t"] + 1)]


def windows(starts: list[float], load_end: int) -> list[tuple[int, int]]:
    """Consecutive [first, end) second ranges, one per fault start (sorted)."""
    firsts = [math.floor(t) for t in starts]
    ends = [*firsts[1:], load_end][:len(firsts)]
    return [(a, max(a, b)) for a, b in zip(firsts, ends, strict=True)]


def full_seconds(seconds: list[dict[str, Any]]) -> set[int]:
    """Seconds the load fully covered (not the partial first and last ones)."""
    ts = [s["t"] for s in seconds if s["requests"]]
    return set(range(ts[0] + 1, ts[-1])) if ts else set()


def baseline(by_t: dict[int, dict[str, Any]], full: set[int], before: int) -> float | None:
    """Median requests/s of the last healthy full seconds before `before`."""
    rates = [by_t[t]["requests"] for t in range(before - BASELINE_SECONDS, before)
             if t in full and t in by_t and not by_t[t]["failures"]]
    return float(statistics.median(rates)) if rates else None


def impact(seconds: list[dict[str, Any]], window: tuple[int, int], fault_time: float) -> Impact:
    by_t = {s["t"]: s for s in seconds}
    full = full_seconds(seconds)
    first, end = window
    inside = [by_t[t] for t in range(first, end) if t in by_t]
    base = baseline(by_t, full, first)
    errors: dict[str, int] = {}
    for s in inside:
        for kind, n in s["errors"].items():
            errors[kind] = errors.get(kind, 0) + n

    def impaired(t: int) -> bool:
        s = by_t.get(t, {"requests": 0, "failures": 0})
        low = (base is not None and t in full and s["requests"] < RECOVERED_SHARE * base)
        return bool(s["failures"]) or low

    bad = [t for t in range(first, end) if impaired(t)]
    last_full = max((t for t in range(first, end) if t in full), default=first)
    if not bad:
        recovery: float | None = 0.0
    elif bad[-1] >= last_full:
        recovery = None
    else:
        recovery = round(max(0.0, bad[-1] + 1 - fault_time), 2)
    rates = [by_t[t]["requests"] if t in by_t else 0 for t in range(first, end) if t in full]
    p95s = [s["p95"] for s in inside if s["p95"] is not None]
    slowest = [s["max"] for s in inside if s.get("max") is not None]
    return Impact(first, end, sum(s["requests"] for s in inside),
                  sum(s["failures"] for s in inside), sum(s["retried"] for s in inside),
                  errors, base, min(rates) if rates else None, max(p95s) if p95s else None,
                  max(slowest) if slowest else None, recovery)


def build(scenario: Any, records: list[Any], output: Any, cluster_info: dict[str, Any],
          files: dict[str, str]) -> dict[str, Any]:
    """The JSON report: scenario, totals, one entry per fault, the timeline, the verdict."""
    seconds = every_second(output.seconds)
    # One origin for every time in the report: the start of the second the load began in.
    t0 = math.floor(float(output.header.get("started") or (seconds[0]["t"] if seconds else 0)))
    load_end = seconds[-1]["t"] + 1 if seconds else t0
    done = [r for r in records if r.started is not None]
    wins = windows([r.started for r in done], load_end)
    faults = []
    for rec in records:
        entry = rec.as_json(t0)
        if rec.started is not None:
            imp = impact(seconds, wins[done.index(rec)], rec.started)
            entry.update(window_s=[imp.first_s - t0, imp.end_s - t0], requests=imp.requests,
                         failed=imp.failed, retried=imp.retried, errors=imp.errors,
                         baseline_rps=imp.baseline_rps, min_rps=imp.min_rps,
                         p95_max_ms=imp.p95_max_ms, slowest_ms=imp.slowest_ms,
                         recovery_s=imp.recovery_s)
            allowed = rec.allowed_failures
            entry["survived"] = allowed is None or imp.failed <= allowed
        faults.append(entry)
    requests = sum(s["requests"] for s in seconds)
    failed = sum(s["failures"] for s in seconds)
    before_first = sum(s["failures"] for s in seconds if not wins or s["t"] < wins[0][0])
    p95s = sorted(s["p95"] for s in seconds if s["p95"] is not None)
    report = {
        "scenario": {"name": scenario.name, "duration": scenario.duration,
                     "users": scenario.users, "rate_per_user": scenario.rate,
                     "paths": list(scenario.paths), "cluster": vars(scenario.cluster)},
        "cluster": cluster_info,
        "load": {k: output.header.get(k) for k in ("nodes", "retry_policy", "users",
                                                   "connect_timeout", "network_timeout")},
        "origin": t0,  # Unix second that every *_s field and timeline t counts from
        "totals": {"requests": requests, "failed": failed,
                   "retried": sum(s["retried"] for s in seconds),
                   "failed_before_any_fault": before_first,
                   "p95_median_ms": p95s[len(p95s) // 2] if p95s else None,
                   "locust_json": output.totals, "locust_exit_code": output.exit_code},
        "faults": faults,
        "timeline": [{**s, "t": s["t"] - t0} for s in seconds],
        "files": files,
    }
    report["verdict"] = verdict(report)
    return report


def verdict(report: dict[str, Any], per_fault: bool = True) -> dict[str, Any]:
    """ok, and one sentence per problem: a fault that lost more than it may, a fault that
    could not be run, failures before any fault, totals that disagree with Locust's.
    per_fault=False (overlapping random faults): a window holds several faults' losses,
    so the windows and the front's facts are shown but not judged; the checker's
    failures_within_allowance invariant judges the overlapping spans instead."""
    problems = []
    totals = report["totals"]
    for f in report["faults"] if per_fault else []:
        if f["outcome"] == "failed":
            problems.append(f"{f['label']} at {f['at']:g}s could not be carried out: "
                            f"{f['detail']}")
        if f.get("survived") is False:
            problems.append(f"{f['label']} at {f['at']:g}s lost {f['failed']} requests "
                            f"(allowed {f['allowed_failures']})")
    if report["cluster"].get("front") and per_fault:
        problems += front_problems(report["faults"])
    if totals["failed_before_any_fault"]:
        problems.append(f"{totals['failed_before_any_fault']} requests failed before any fault")
    theirs = totals["locust_json"]
    if theirs and (theirs.get("requests"), theirs.get("failures")) != (
            totals["requests"], totals["failed"]):
        problems.append(f"the timeline counts {totals['requests']} requests / "
                        f"{totals['failed']} failed but Locust's JSON {theirs.get('requests')} / "
                        f"{theirs.get('failures')}")
    if not totals["requests"]:
        problems.append("no request completed")
    return {"ok": not problems, "problems": problems}


def front_problems(faults: list[dict[str, Any]]) -> list[str]:
    """Behind a front, a hung node must not stall the rest and a joining node must serve."""
    problems = []
    for f in faults:
        facts = f.get("facts") or {}
        if f["outcome"] not in ("done", "running"):
            continue
        if f["action"] == "join-node":
            delay = facts.get("first_request_after_ready_s")
            if delay is None:
                problems.append(f"{f['label']} at {f['at']:g}s: the new node never got a "
                                f"request through the front")
            elif delay > JOIN_SERVES_WITHIN:
                problems.append(f"{f['label']} at {f['at']:g}s: first request {delay:g}s after "
                                f"ready (allowed {JOIN_SERVES_WITHIN:g}s)")
        if f["action"] == "pause-node":
            share = facts.get("pause_throughput_share")
            if share is not None and share < PAUSE_THROUGHPUT_SHARE:
                problems.append(f"{f['label']} at {f['at']:g}s: throughput fell to {share:.0%} "
                                f"of the offered load while the node was hung (allowed "
                                f"{PAUSE_THROUGHPUT_SHARE:.0%})")
            if facts.get("front_out_s") is None:
                problems.append(f"{f['label']} at {f['at']:g}s: HAProxy never took the paused "
                                f"node out")
    return problems


def fact_lines(report: dict[str, Any]) -> list[str]:
    """One line per measured fact: elections, the front taking a node out, a join."""
    lines = []
    for f in report["faults"]:
        facts = f.get("facts") or {}
        at = f"{f['at']:>6g}  {f['label']:<26}"
        if "new_leader" in facts:
            if facts.get("election_s") is None:
                lines.append(f"{at} leader stayed {facts['old_leader']} (epoch "
                             f"{facts['old_epoch']})")
            else:
                lines.append(f"{at} new leader {facts['new_leader']} epoch {facts['new_epoch']} "
                             f"(was {facts['old_leader']} epoch {facts['old_epoch']}) within "
                             f"{facts['election_s']:g} s")
        if "front_out_s" in facts:
            out = facts["front_out_s"]
            sent = facts.get("sent_before_out")
            held = facts.get("exposed_requests")
            lines.append(f"{at} HAProxy took {f['node']} ({facts.get('slot')}) out "
                         + ("never" if out is None else f"after {out:g} s")
                         + ("" if sent is None else f", {sent} requests sent to it before")
                         + ("" if held is None else f"; {held} requests on it during the fault"))
        if "pause_throughput_share" in facts:
            lines.append(f"{at} throughput while hung: {facts['pause_throughput_share']:.0%} "
                         f"of the offered load")
        if f["action"] == "slow-redis" and "heartbeats" in facts:
            dead = facts["declared_dead_s"]
            lines.append(f"{at} {facts['heartbeats']} heartbeats, longest silence "
                         f"{facts['longest_silence_s']:g} s; declared dead "
                         + ("no" if dead is None else f"at +{dead:g} s")
                         + f"; leader before {facts['leader_before']}, elected within the "
                           f"fault + TTL: {facts['elected'] or 'nobody'}")
        if f["action"] == "join-node" and "ready_s_after_start" in facts:
            first = facts.get("first_request_after_ready_s")
            lines.append(f"{at} {f['node']} ready {facts['ready_s_after_start']:g} s after start"
                         + ("" if "slot" not in facts and first is None else
                            "; first request " + ("never" if first is None else
                                                  f"{first:g} s after ready")))
        if f["action"] == "kill-node" and "ready_s_after_restart" in facts:
            lines.append(f"{at} {f['node']} ready {facts['ready_s_after_restart']:g} s after "
                         f"its restart (capacity back)")
    return lines


def _fmt(value: Any, unit: str = "", none: str = "-") -> str:
    if value is None:
        return none
    if isinstance(value, float):
        return f"{value:.1f}{unit}"
    return f"{value}{unit}"


def summary_text(report: dict[str, Any]) -> str:
    sc, totals = report["scenario"], report["totals"]
    shape = sc["cluster"]
    ratio = totals["failed"] / totals["requests"] if totals["requests"] else 0.0
    lines = [
        f"Polycorn chaos run '{sc['name']}': {shape['nodes']} nodes x {shape['masters']} "
        f"masters, {shape['workers']} {shape['worker_class']} workers each, "
        f"{sc['users']} users at {sc['rate_per_user']:g} req/s each, {sc['duration']:g} s",
        f"requests {totals['requests']}  failed {totals['failed']} ({ratio:.4%})  "
        f"retried {totals['retried']} (idle keep-alive, RFC 9112 9.3.1)  "
        f"median p95 {_fmt(totals['p95_median_ms'], ' ms')}",
        "",
        f"{'at':>6}  {'fault':<26} {'node':<5} {'failed':>6} {'allowed':>7} {'retried':>7} "
        f"{'recovery':>9} {'min rps':>8} {'p95 max':>9}  result",
    ]
    for f in report["faults"]:
        if f["outcome"] in ("unavailable", "skipped"):
            lines.append(f"{f['at']:>6g}  {f['label']:<26} {f['node'] or '':<5} "
                         f"{f['outcome']}: {f['detail']}")
            continue
        allowed = "any" if f["allowed_failures"] is None else str(f["allowed_failures"])
        recovery = ("not yet" if f.get("recovery_s") is None and "failed" in f
                    else _fmt(f.get("recovery_s"), " s"))
        result = "FAILED TO RUN" if f["outcome"] == "failed" else (
            "ok" if f.get("survived") else "LOST REQUESTS")
        lines.append(
            f"{f['at']:>6g}  {f['label']:<26} {f['node'] or '':<5} {f.get('failed', 0):>6} "
            f"{allowed:>7} {f.get('retried', 0):>7} {recovery:>9} "
            f"{_fmt(f.get('min_rps')):>8} {_fmt(f.get('p95_max_ms'), ' ms'):>9}  {result}")
    facts = fact_lines(report)
    if facts:
        lines += ["", *facts]
    if not report["cluster"].get("front") and any(
            f["allowed_failures"] is None and f["action"] in ("kill-node", "pause-node")
            for f in report["faults"]):
        lines += ["", "any: without a front the clients keep sending to a lost or hung node "
                      "until they give up on it; run with --front haproxy to move the traffic"]
    v = report["verdict"]
    lines.append("")
    lines.append("verdict: " + ("every fault within its allowance" if v["ok"] else
                                "; ".join(v["problems"])))
    files = report["files"]
    lines.append(f"plot: {files.get('plot', '-')}   report: {files.get('report', '-')}")
    return "\n".join(lines)
