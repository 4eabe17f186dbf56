"""Random schedules: the same seed gives the same faults, within the run's bounds, from
the whole list, overlapping; and two short seeds run end to end under the checker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from polycorn.ha.process_tracker import ProcessTracker

from loadtests import netns, random_schedule
from loadtests.random_schedule import FIRST_AT, QUIET, draw
from loadtests.scenario import ACTIONS, ClusterShape, ScenarioError

ROOT = Path(__file__).resolve().parents[2]
SHAPE = ClusterShape()


def test_a_seed_replays_its_schedule_and_another_seed_differs():
    assert draw(7, 90, SHAPE) == draw(7, 90, SHAPE)
    assert draw(7, 90, SHAPE) != draw(8, 90, SHAPE)


def test_faults_stay_between_the_baseline_and_the_quiet_end():
    for seed in range(30):
        faults = draw(seed, 60, SHAPE, redis_mode="sentinel")
        assert faults, seed
        assert all(FIRST_AT <= f.at < 60 - QUIET for f in faults)
        assert [f.at for f in faults] == sorted(f.at for f in faults)
        for f in faults:
            assert f.action in ACTIONS
            assert (f.node is not None) == ACTIONS[f.action].targets_node
            assert f.master is None or 0 <= f.master < SHAPE.masters


def test_over_many_seeds_every_action_is_drawn_and_faults_overlap():
    seen, overlapping = set(), 0
    for seed in range(40):
        faults = draw(seed, 90, SHAPE, redis_mode="sentinel")
        seen |= {f.action for f in faults}
        overlapping += any(b.at < a.at + (a.duration or 0)
                           for a, b in zip(faults, faults[1:], strict=False))
        counts = {a: sum(f.action == a for f in faults) for a in random_schedule.CAPS}
        assert all(counts[a] <= cap for a, cap in random_schedule.CAPS.items())
    assert seen == set(ACTIONS)
    assert overlapping >= 20


def test_what_the_cluster_cannot_do_is_never_drawn():
    for seed in range(20):
        actions = {f.action for f in draw(seed, 90, SHAPE, redis_mode="single",
                                          unavailable=frozenset({"rolling-upgrade"}))}
        assert not actions & {"sentinel-failover", "rolling-upgrade"}


def test_a_duration_too_short_for_the_checker_is_refused():
    with pytest.raises(ScenarioError, match="--duration >= 25"):
        draw(1, 20, SHAPE)


SMALL_LOAD = ("--users", "6", "--rate", "20")


def run_seed(out: Path, seed: int, duration: int, *extra: str, plot: bool = False,
             load: tuple[str, ...] = SMALL_LOAD) -> tuple[int, dict, str]:
    try:
        done = subprocess.run([sys.executable, "-m", "loadtests.chaos", "--out", str(out),
                               "--random", str(seed), "--duration", str(duration), *load,
                               *(() if plot else ("--no-plot",)), *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=duration + 150)
    finally:
        leftovers = ProcessTracker(out / "run")
        left = leftovers.sweep()
        leftovers.kill_all()
    assert not left, f"the runner left processes behind: {left}"
    report = json.loads((out / "report.json").read_text())
    return done.returncode, report, done.stdout + done.stderr


def check_invariants(code: int, report: dict, output: str, seed: int) -> None:
    assert report["schedule"]["seed"] == seed
    assert report["schedule"]["faults"], output
    names = [i["name"] for i in report["invariants"]]
    assert names == ["fencing", "max_unavailable", "no_false_death", "capacity",
                     "failures_within_allowance", "nothing_left_behind"]
    broken = [i for i in report["invariants"] if not i["held"]]
    assert not broken, (broken, output[-3000:])
    assert report["totals"]["requests"] > 0
    assert code == 0, output[-3000:]


# CI: two short seeds (about 40 s of load each, about 50 s a run); the 90 s seeds of the
# README are slow. Seed 2 failed once in four CI runs with 'capacity: not restored within
# 14s of the last fault: no state from n1' after its drain-node n1 / kill-master / usr2 /
# join / sentinel-failover schedule: the checker took the old generation's agent's last
# word ('stopping', said after the new agent's 'ready') for the node's state
# (test_load_checker.py::test_capacity_takes_a_nodes_state_from_its_current_agent_after_
# an_upgrade).
@pytest.mark.parametrize("seed", [1, 2])
def test_a_short_random_schedule_holds_every_invariant(tmp_path, seed):
    # Seed 1 draws its plot too, as `make demo` does: matplotlib's font cache kept two
    # .ttf files open in the runner, and nothing_left_behind failed the demo.
    plotted = seed == 1
    code, report, output = run_seed(tmp_path / f"seed{seed}", seed, 40, plot=plotted)
    check_invariants(code, report, output, seed)
    assert (tmp_path / f"seed{seed}" / "chaos.png").exists() == plotted


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 4])
def test_a_random_schedule_behind_the_front_holds_every_invariant(tmp_path, seed):
    code, report, output = run_seed(tmp_path / f"front{seed}", seed, 90, "--front", "haproxy")
    check_invariants(code, report, output, seed)


def test_latency_faults_are_added_without_moving_any_other_fault():
    drawn_with, drawn_without = 0, 0
    for seed in range(30):
        full = draw(seed, 90, SHAPE, redis_mode="sentinel")
        without = draw(seed, 90, SHAPE, redis_mode="sentinel",
                       unavailable=frozenset(random_schedule.LATENCY))
        # Seeds kept as regression tests replay the faults they had before latency faults.
        assert tuple(f for f in full if f.action not in random_schedule.LATENCY) == without
        latency = [f for f in full if f.action in random_schedule.LATENCY]
        drawn_with += len(latency)
        drawn_without += sum(f.action in random_schedule.LATENCY for f in without)
        assert all(f.delay in random_schedule.LATENCY_DELAYS_MS and f.node and f.duration
                   and FIRST_AT <= f.at < 90 - QUIET for f in latency)
        assert len(latency) <= random_schedule.MAX_LATENCY_FAULTS
    assert drawn_with >= 15 and drawn_without == 0


# The seeds of the README's table (90 s, --netns --front haproxy, the default load of
# `python -m loadtests.seeds`) that broke an invariant, kept as regression tests:
# 4, 5 and 19 broke no_false_death (4 also capacity): a SENTINEL FAILOVER soon after a
# healed split, or after another failover, promoted a primary whose data was seconds old
# (Sentinel had not yet made it a replica), and a node elected on it at once declared a
# heartbeating node dead (tests/ha/test_agent_redis_watch.py is the unit test). The third
# run: 4 lost 1,120 to the latency proxy (test_load_latency_proxy.py); 8 broke capacity (a
# restarted promoted Redis came back a replica: test_redis_launcher.py); 14 and 20 lost
# requests to a USR2 handover's gap (test_master_successor.py, test_haproxy_reconcile.py);
# 19 broke no_false_death again, on an agent just started (test_duties.py).
@pytest.mark.slow
@pytest.mark.skipif(netns.unavailable_reason() is not None,
                    reason=f"hosts with their own network: {netns.unavailable_reason()}")
@pytest.mark.parametrize("seed", [4, 5, 8, 14, 19, 20])
def test_a_seed_that_broke_an_invariant_behind_partitions_holds_them_now(tmp_path, seed):
    code, report, output = run_seed(tmp_path / f"netns{seed}", seed, 90, "--netns",
                                    "--front", "haproxy", load=())
    check_invariants(code, report, output, seed)
