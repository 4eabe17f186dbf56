"""The report's arithmetic on made-up timelines: windows, losses, recovery, verdict, text."""

from __future__ import annotations

from dataclasses import dataclass, field

from loadtests.faults import FaultRecord, allowed_failures
from loadtests.report import build, every_second, impact, summary_text, windows
from loadtests.scenario import ClusterShape, Fault, Scenario

T0 = 1_700_000_000


def second(t: int, requests: int = 100, failures: int = 0, retried: int = 0,
           p95: float | None = 5.0, errors: dict | None = None) -> dict:
    return {"t": T0 + t, "requests": requests, "failures": failures, "retried": retried,
            "p50": p95 and p95 / 2, "p95": p95, "p99": p95, "max": p95,
            "errors": errors or ({"ClosedBeforeResponse": failures} if failures else {}),
            "nodes": {}}


@dataclass
class Output:
    seconds: list
    totals: dict = field(default_factory=dict)
    header: dict = field(default_factory=lambda: {"started": T0 + 0.4})
    exit_code: int = 0
    log_tail: str = ""


def record(at: float, action: str, node: str | None = "n1", **kw) -> FaultRecord:
    fault = Fault(at, action, node, kw.pop("duration", None))
    rec = FaultRecord(fault, allowed_failures=allowed_failures(fault, ClusterShape()))
    rec.started, rec.outcome, rec.node = T0 + at, "done", node
    for key, value in kw.items():
        setattr(rec, key, value)
    return rec


def test_windows_partition_the_load_at_each_fault():
    assert windows([T0 + 10.2, T0 + 20.9, T0 + 31.0], T0 + 60) == [
        (T0 + 10, T0 + 20), (T0 + 20, T0 + 31), (T0 + 31, T0 + 60)]


def test_a_clean_window_recovers_at_once():
    seconds = [second(t) for t in range(30)]
    result = impact(seconds, (T0 + 10, T0 + 20), T0 + 10.3)
    assert (result.failed, result.recovery_s, result.baseline_rps) == (0, 0.0, 100.0)
    assert result.requests == 1000
    assert result.min_rps == 100


def test_recovery_ends_with_the_last_failing_or_slow_second():
    seconds = [second(t) for t in range(30)]
    seconds[11] = second(11, requests=40, failures=3)
    seconds[12] = second(12, requests=70)  # below 80% of the baseline: still impaired
    result = impact(seconds, (T0 + 10, T0 + 20), T0 + 10.5)
    assert result.failed == 3
    assert result.errors == {"ClosedBeforeResponse": 3}
    assert result.recovery_s == 2.5  # end of second 12 minus the fault at 10.5
    assert result.min_rps == 40


def test_a_window_that_ends_impaired_has_not_recovered():
    seconds = [second(t) for t in range(10)] + [second(t, 50, 50) for t in range(10, 20)]
    assert impact(seconds, (T0 + 10, T0 + 20), T0 + 10.0).recovery_s is None


def test_a_second_without_any_completed_request_is_impaired_and_shown():
    seconds = [second(t) for t in range(30) if t != 14]  # a hang: nothing completed
    assert impact(seconds, (T0 + 10, T0 + 20), T0 + 10.0).recovery_s == 5.0
    filled = every_second(seconds)
    assert [s["t"] - T0 for s in filled] == list(range(30))
    assert (filled[14]["requests"], filled[14]["p95"]) == (0, None)


def test_the_report_gives_each_failure_to_exactly_one_fault():
    seconds = [second(t) for t in range(40)]
    seconds[5] = second(5, failures=1)
    seconds[16] = second(16, failures=2)
    seconds[27] = second(27, failures=4)
    records = [record(15.2, "kill-worker"), record(25.0, "kill-node", "n2")]
    report = build(Scenario(duration=40), records, Output(seconds, {"requests": 4000,
                                                                    "failures": 7}), {}, {})
    by_action = {f["action"]: f for f in report["faults"]}
    assert by_action["kill-worker"]["failed"] == 2
    assert by_action["kill-node"]["failed"] == 4
    assert report["totals"]["failed_before_any_fault"] == 1
    assert report["totals"]["failed"] == 7
    assert report["origin"] == T0
    assert report["timeline"][0]["t"] == 0
    assert by_action["kill-worker"]["started_s"] == 15.2
    assert by_action["kill-worker"]["window_s"] == [15, 25]
    v = report["verdict"]
    assert not v["ok"]
    assert v["problems"] == [
        "kill-worker n1 at 15.2s lost 2 requests (allowed 1)",
        "1 requests failed before any fault"]


def test_the_verdict_catches_a_timeline_that_disagrees_with_locust():
    seconds = [second(t) for t in range(20)]
    report = build(Scenario(duration=20), [], Output(seconds, {"requests": 1999,
                                                               "failures": 0}), {}, {})
    assert report["verdict"]["problems"] == [
        "the timeline counts 2000 requests / 0 failed but Locust's JSON 1999 / 0"]


def test_unavailable_and_failed_faults_are_reported_not_hidden():
    seconds = [second(t) for t in range(30)]
    unavailable = FaultRecord(Fault(5.0, "rolling-upgrade"), outcome="unavailable",
                              detail="needs polycorn-ctl upgrade", allowed_failures=0)
    broken = record(10.0, "kill-leader", None, outcome="failed", detail="no leader")
    fine = record(20.0, "usr2", "n3", ended=T0 + 23.0)
    report = build(Scenario(duration=30), [unavailable, broken, fine],
                   Output(seconds, {"requests": 3000, "failures": 0}), {}, {})
    assert report["verdict"]["problems"] == [
        "kill-leader at 10s could not be carried out: no leader"]
    text = summary_text(report)
    assert "rolling-upgrade" in text and "unavailable: needs polycorn-ctl upgrade" in text
    assert "FAILED TO RUN" in text
    usr2_line = next(line for line in text.splitlines() if line.lstrip().startswith("20"))
    assert usr2_line.split()[1:4] == ["usr2", "n3", "n3"] and usr2_line.endswith("ok")
    assert report["faults"][2]["ended_s"] == 23.0


def test_what_each_fault_may_cost():
    two, one = ClusterShape(masters=2), ClusterShape(masters=1, workers=2)
    threads = ClusterShape(worker_class="thread", threads=4)
    cases = {("kill-worker", two): 1, ("kill-worker", threads): 4,
             ("kill-master", two): 0, ("kill-master", one): None,
             ("kill-leader", two): 0, ("kill-leader", one): None,
             ("kill-node", two): None, ("pause-node", two): None,
             ("usr2", one): 0, ("hup", two): 0, ("stop-redis", two): 0,
             ("sentinel-failover", two): 0, ("rolling-upgrade", two): 0,
             ("kill-worker", None): None}
    for (action, shape), allowed in cases.items():
        assert allowed_failures(Fault(5.0, action), shape) == allowed, (action, shape)
    # Behind a front a lost or joining node costs nothing; a hung one gets its bound later.
    assert allowed_failures(Fault(5.0, "kill-node"), two, front=True) == 0
    assert allowed_failures(Fault(5.0, "join-node"), two, front=True) == 0
    assert allowed_failures(Fault(5.0, "join-node"), two) is None
    assert allowed_failures(Fault(5.0, "pause-node"), two, front=True) is None


FRONT = {"front": {"kind": "haproxy", "url": "http://127.0.0.1:1"}}


def test_behind_a_front_a_late_join_and_a_stalled_pause_are_problems():
    seconds = [second(t) for t in range(40)]
    late = record(10.0, "join-node", None,
                  facts={"ready_s_after_start": 3.0, "first_request_after_ready_s": 2.6})
    never = record(20.0, "join-node", None, facts={"ready_s_after_start": 3.0})
    stalled = record(30.0, "pause-node", "n2",
                     facts={"front_out_s": 0.6, "pause_throughput_share": 0.3})
    report = build(Scenario(duration=40), [late, never, stalled],
                   Output(seconds, {"requests": 4000, "failures": 0}), FRONT, {})
    assert report["verdict"]["problems"] == [
        "join-node at 10s: first request 2.6s after ready (allowed 2s)",
        "join-node at 20s: the new node never got a request through the front",
        "pause-node n2 at 30s: throughput fell to 30% of the offered load while the node "
        "was hung (allowed 50%)"]
    # The same facts without a front are figures, not problems.
    assert build(Scenario(duration=40), [late, never, stalled],
                 Output(seconds, {"requests": 4000, "failures": 0}), {}, {})["verdict"]["ok"]


def test_the_summary_names_the_new_leader_and_what_the_front_did():
    seconds = [second(t) for t in range(40)]
    leader = record(10.0, "kill-node", "n1", facts={
        "old_leader": "n1", "old_epoch": 3, "new_leader": "n2", "new_epoch": 4,
        "election_s": 6.8, "front_out_s": 0.4, "slot": "n1"})
    stayed = record(20.0, "kill-leader", None, facts={
        "old_leader": "n2", "old_epoch": 4, "new_leader": "n2", "new_epoch": 4,
        "election_s": None})
    join = record(30.0, "join-node", None, facts={
        "ready_s_after_start": 2.5, "first_request_after_ready_s": 0.3, "slot": "n3"})
    join.node = "n4"  # join-node names no node: the runner picks the next id
    text = summary_text(build(Scenario(duration=40), [leader, stayed, join],
                              Output(seconds, {"requests": 4000, "failures": 0}), FRONT, {}))
    assert "new leader n2 epoch 4 (was n1 epoch 3) within 6.8 s" in text
    assert "leader stayed n2 (epoch 4)" in text
    assert "HAProxy took n1 (n1) out after 0.4 s" in text
    assert "n4 ready 2.5 s after start; first request 0.3 s after ready" in text
    assert "without a front" not in text


def test_without_a_front_the_summary_says_why_node_faults_may_cost_anything():
    seconds = [second(t) for t in range(30)]
    text = summary_text(build(Scenario(duration=30), [record(10.0, "kill-node", "n2")],
                              Output(seconds, {"requests": 3000, "failures": 0}), {}, {}))
    assert "without a front the clients keep sending to a lost or hung node" in text
