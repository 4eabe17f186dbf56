"""The slow-redis fault: what its history says it cost (pure), and one short real run
with a node's Redis path delayed (loopback, single Redis)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from polycorn.ha.process_tracker import ProcessTracker

from loadtests.latency_faults import history_facts
from loadtests.scenario import Fault, ScenarioError, parse_fault, parse_fault_flag

ROOT = Path(__file__).resolve().parents[2]


def store(t: float, op: str, res, **fields) -> dict:
    return {"k": "store", "t": t, "t1": t + 0.01, "op": op, "res": res, **fields}


def test_facts_name_the_silence_the_death_and_the_election():
    history = [store(9.0, "acquire_lease", 1, node="n2"),
               store(9.5, "heartbeat", "refreshed", node="n2"),
               store(10.5, "heartbeat", "refreshed", node="n2"),
               store(11.0, "renew_lease", True, holder="n2", epoch=1),
               store(11.6, "heartbeat", "refreshed", node="n1"),
               store(16.4, "acquire_lease", 2, node="n1"),
               store(16.5, "declare_dead", True, node="n2", holder="n1"),
               store(18.0, "heartbeat", "declared_dead", node="n2"),
               store(18.1, "register", 2, node="n2"),
               store(19.1, "heartbeat", "refreshed", node="n2")]
    rec = SimpleNamespace(started=11.0, ended=17.0, node="n2")
    facts = history_facts(rec, history, shift=0.0, node_ttl=3.0)
    assert facts == {"heartbeats": 2, "longest_silence_s": 7.6, "declared_dead_s": 5.5,
                     "leader_before": "n2", "elected": "n1 epoch 2 at +5.40s"}
    # A delay the node shrugged off: heartbeats all along, nobody declared or elected.
    calm = [store(t, "heartbeat", "refreshed", node="n2") for t in range(5, 25)]
    facts = history_facts(rec, calm, shift=0.0, node_ttl=3.0)
    assert facts["longest_silence_s"] == 1 and facts["declared_dead_s"] is None
    assert facts["elected"] is None and facts["heartbeats"] == 10


def test_the_fault_takes_a_delay_in_ms_and_only_slow_redis_does():
    fault = parse_fault_flag("5:slow-redis:n1:delay=250,duration=3")
    assert fault == Fault(5.0, "slow-redis", "n1", 3.0, None, 250.0)
    assert fault.label == "slow-redis n1 250ms 3s"
    assert parse_fault({"at": 5, "action": "slow-redis", "node": "leader"}).duration == 5.0
    jittered = parse_fault_flag("5:slow-front:n2:delay=100,jitter=50")
    assert jittered.jitter == 50.0 and jittered.label == "slow-front n2 100ms+-50 5s"
    with pytest.raises(ScenarioError, match="takes no `delay`"):
        parse_fault({"at": 5, "action": "pause-node", "node": "n1", "delay": 100})
    with pytest.raises(ScenarioError, match="takes no `jitter`"):
        parse_fault({"at": 5, "action": "pause-node", "node": "n1", "jitter": 100})


def test_a_slowed_redis_path_costs_no_request_and_shows_in_the_history(tmp_path):
    """Loopback, single Redis: n2 reaches Redis through its proxy; 300 ms each way for
    3 s costs no request (Redis is never the data path) and the history shows the slow
    heartbeats' effect: none of them late enough for a death."""
    out = tmp_path / "slow"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "loadtests.chaos", "--out", str(out), "--duration", "12",
             "--nodes", "2", "--masters", "1", "--workers", "1", "--users", "2", "--rate", "10",
             "--no-plot", "--fault", "4:slow-redis:n2:delay=300,jitter=20,duration=3"],
            cwd=ROOT, capture_output=True, text=True, timeout=150)
    finally:
        leftovers = ProcessTracker(out / "run")
        left = leftovers.sweep()
        leftovers.kill_all()
    assert not left
    report = json.loads((out / "report.json").read_text())
    (fault,) = report["faults"]
    assert fault["outcome"] == "done", fault
    assert fault["allowed_failures"] == 0 and fault["failed"] == 0
    assert "300 (+ up to 20) ms each way" in fault["detail"]
    facts = fault["facts"]
    assert facts["declared_dead_s"] is None and facts["heartbeats"] >= 2
    proxy_log = (out / "run" / "lat-n2.log").read_text()
    assert "'up_ms': 300.0" in proxy_log and "'jitter_ms': 20.0" in proxy_log
    assert "'up_ms': 0.0" in proxy_log
    # Every heartbeat of n2 during the delay took a round trip through it.
    beats = [json.loads(line) for f in (out / "history").glob("*.jsonl")
             for line in f.read_text().splitlines()]
    slow = [r for r in beats if r.get("op") == "heartbeat" and r.get("node") == "n2"
            and r["t1"] - r["t"] >= 0.6]
    assert slow, "no heartbeat of n2 paid the 2 x 300 ms"
    assert all(i["held"] for i in report["invariants"]), report["invariants"]
    assert "heartbeats, longest silence" in done.stdout
    assert done.returncode == 0, done.stdout[-2000:]
