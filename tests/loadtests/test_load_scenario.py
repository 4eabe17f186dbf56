"""Chaos scenarios: the shipped files, every fault form, and each mistake's message."""

from __future__ import annotations

import importlib.util
import json

import pytest

from loadtests.scenario import (
    ACTIONS,
    SCENARIOS,
    ClusterShape,
    Fault,
    Scenario,
    ScenarioError,
    check_fits,
    load_scenario,
    parse_fault_flag,
    parse_scenario,
)

STANDARD_FAULTS = ["kill-worker", "kill-master", "usr2", "kill-leader", "stop-redis"]
HOST_FAULTS = ["pause-node", "kill-node", "join-node"]


@pytest.mark.parametrize("name,duration,front,actions", [
    ("standard", 120, "haproxy", STANDARD_FAULTS + HOST_FAULTS),
    ("ci", 60, "none", STANDARD_FAULTS)])
def test_shipped_scenarios_run_the_standard_faults_on_three_nodes_of_two_masters(
        name, duration, front, actions):
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    check_fits(scenario)
    assert scenario.name == name
    assert scenario.duration == duration
    assert scenario.front == front
    assert [f.action for f in scenario.faults] == actions
    assert scenario.cluster == ClusterShape(nodes=3, masters=2, workers=4)
    gaps = [b.at - a.at for a, b in zip(scenario.faults, scenario.faults[1:], strict=False)]
    assert min(gaps) >= 10, "each fault needs a window of its own"
    assert all(f.at + (f.duration or 0) < duration - 5 for f in scenario.faults)


def test_json_and_toml_give_the_same_scenario(tmp_path):
    data = {"duration": 30, "users": 4, "rate": 5, "cluster": {"nodes": 2, "masters": 1,
                                                                "workers": 2},
            "fault": [{"at": 10, "action": "pause-node", "node": "n2", "duration": 2},
                      {"at": 5, "action": "kill-master", "node": "leader", "master": 0}]}
    (tmp_path / "s.json").write_text(json.dumps(data))
    (tmp_path / "s.toml").write_text(
        'duration = 30\nusers = 4\nrate = 5\n[cluster]\nnodes = 2\nmasters = 1\nworkers = 2\n'
        '[[fault]]\nat = 10\naction = "pause-node"\nnode = "n2"\nduration = 2\n'
        '[[fault]]\nat = 5\naction = "kill-master"\nnode = "leader"\nmaster = 0\n')
    from_json, from_toml = load_scenario(tmp_path / "s.json"), load_scenario(tmp_path / "s.toml")
    assert from_json == from_toml
    assert [f.at for f in from_json.faults] == [5.0, 10.0]  # sorted by time


@pytest.mark.skipif(importlib.util.find_spec("yaml") is not None, reason="PyYAML is installed")
def test_yaml_without_pyyaml_says_what_to_install(tmp_path):
    (tmp_path / "s.yaml").write_text("duration: 30\n")
    with pytest.raises(ScenarioError, match="PyYAML"):
        load_scenario(tmp_path / "s.yaml")


@pytest.mark.parametrize("flag,expected", [
    ("20:kill-master:n2:master=1", Fault(20.0, "kill-master", "n2", None, 1)),
    ("30:pause-node:n3:duration=2.5", Fault(30.0, "pause-node", "n3", 2.5)),
    ("30:pause-node:follower", Fault(30.0, "pause-node", "follower", 3.0)),
    ("12.5:kill-leader", Fault(12.5, "kill-leader")),
    ("40:stop-redis:duration=4", Fault(40.0, "stop-redis", None, 4.0)),
])
def test_fault_flags(flag, expected):
    assert parse_fault_flag(flag) == expected


@pytest.mark.parametrize("flag,message", [
    ("kill-worker", "want AT:ACTION"),
    ("x:kill-worker:n1", "is not a number of seconds"),
    ("5:explode:n1", "is not one of kill-worker"),
    ("5:kill-worker", "`node` (an id, leader or follower) is missing"),
    ("5:kill-leader:n1", "takes no `node`"),
    ("5:usr2:n1:master=1", "takes no `master`"),
    ("5:pause-node:n1:duration=0", "duration must be >= 0.1"),
    ("5:pause-node:n1:duration=x", "is not a number"),
    ("0.1:kill-worker:n1", "at must be >= 0.5"),
])
def test_bad_fault_flags_say_what_is_wrong(flag, message):
    with pytest.raises(ScenarioError) as err:
        parse_fault_flag(flag)
    assert message in str(err.value)


@pytest.mark.parametrize("data,message", [
    ({"durations": 5}, "unknown key(s) durations"),
    ({"duration": 2}, "duration must be >= 5"),
    ({"users": 1.5}, "users must be an integer"),
    ({"cluster": {"nodes": 0}}, "cluster nodes must be >= 1"),
    ({"cluster": {"worker_class": "event"}}, "worker_class must be sync or thread"),
    ({"cluster": {"masters": 3, "workers": 2}}, "every master needs a worker"),
    ({"fault": [{"action": "usr2", "node": "n1"}]}, "`at` (seconds after the load started)"),
    ({"fault": [{"at": 3, "action": "usr2", "node": "n1", "when": 2}]}, "unknown key(s) when"),
])
def test_bad_scenarios_say_what_to_change(data, message):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data)
    assert message in str(err.value)


@pytest.mark.parametrize("fault,message", [
    (Fault(60.0, "kill-worker", "n1"), "is not within the 60s of load"),
    (Fault(5.0, "kill-worker", "n9"), "no node 'n9' (nodes: n1, n2, n3, leader, follower)"),
    (Fault(5.0, "kill-master", "n1", None, 2), "nodes have 2 master(s)"),
])
def test_faults_must_fit_the_scenario(fault, message):
    scenario = Scenario(duration=60, faults=(fault,))
    with pytest.raises(ScenarioError) as err:
        check_fits(scenario)
    assert message in str(err.value)


def test_every_action_is_documented_and_labelled():
    for name, spec in ACTIONS.items():
        assert spec.help
        assert Fault(1.0, name, "n1" if spec.targets_node else None).label.startswith(name)
    assert Fault(1.0, "kill-master", "n2", None, 1).label == "kill-master n2 m1"
    assert Fault(1.0, "pause-node", "n2", 2.0).label == "pause-node n2 2s"


def test_the_front_is_none_or_haproxy():
    assert parse_scenario({"front": "haproxy"}).front == "haproxy"
    assert parse_scenario({}).front == "none"
    with pytest.raises(ScenarioError, match="front must be one of none, haproxy"):
        parse_scenario({"front": "nginx"})


def test_worker_concurrency_bounds_what_a_worker_kill_may_lose():
    assert ClusterShape().worker_concurrency() == 1
    assert ClusterShape(worker_class="thread", threads=8).worker_concurrency() == 8
