"""Cluster rolling upgrades on three real polycorn nodes under steady load: one node at a
time with zero failed requests, a release failing its health check halts the rollout at
its first node (rolled back, command exits 5), the leader killed mid-rollout is replaced
and the rollout finished without upgrading any node twice, and a deposed leader's
upgrade command is rejected by every node. Figures are printed: run with -s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from polycorn.ha import events as ev
from polycorn.ha.commands import NodeCommand
from polycorn.ha.registry import NodeState
from polycorn.ha.rollout import NodeRollout, RolloutState, Step
from polycorn.ha.snapshot import Lease
from polycorn.ha.store import IssueResult
from polysupport import Cluster, Sampler, events, figure
from support.http import get
from support.load import Load
from support.procs import wait_until
from test_agent import TTL_MS

pytestmark = pytest.mark.slow


def ctl(c: Cluster, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polycorn.ha.ctl", *args, "--redis",
                           c.redis_url, "--cluster", c.name],
                          capture_output=True, text=True, timeout=timeout)


def report(c: Cluster) -> None:
    rollout = c.store.cluster_state(TTL_MS).rollout
    for e in rollout.entries():
        if e.step is Step.DONE:
            figure(f"rollout: {e.node_id} command -> new master ready", e.took())


def upgrades_started(c: Cluster) -> Counter:
    return Counter(e.node for e in events(c, ev.UPGRADE_STARTED))


def test_rolling_upgrade_one_node_at_a_time_under_load(cluster):
    c = cluster
    before = {n: r.info.pid for n, r in c.records().items()}
    c.site.release("r2")
    c.site.switch("r2")
    with Load(list(c.ports.values()), path="/version", threads=3) as load, \
            Sampler(c, expected=3) as sampler:
        load.wait_requests(50)
        started = time.monotonic()
        done = ctl(c, "upgrade", "--max-unavailable", "1", "--wait", "--timeout", "60")
        took = time.monotonic() - started
        load.wait_requests(50)
    print(done.stdout)
    figure("rollout of 3 nodes, max 1 unavailable", took)
    report(c)
    print(f"LOAD during the rollout: {load.result.summary()}")
    print(f"registry samples: {sampler.samples}, most nodes not ready at once: "
          f"{sampler.max_not_ready}, most upgrade slots held: {sampler.max_slots}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert load.result.failed == 0, load.result.summary()
    assert sampler.samples > 20 and sampler.max_not_ready <= 1 and sampler.max_slots == 1
    records = c.records()
    for node in ("p1", "p2", "p3"):
        assert records[node].info.release == "r2" and records[node].info.pid != before[node]
        assert get(c.ports[node], "/version")[1] == b"r2"
        assert f"{node}: done in" in done.stdout and "r1 -> r2" in done.stdout
    lines = done.stdout.splitlines()
    assert any(line.startswith("rollout ") and " done in " in line for line in lines)
    assert upgrades_started(c) == {"p1": 1, "p2": 1, "p3": 1}


def test_a_release_failing_its_health_check_halts_the_rollout(cluster):
    c = cluster
    before = {n: r.info.pid for n, r in c.records().items()}
    c.site.release("r3", health=500)
    c.site.switch("r3")
    with Load(list(c.ports.values()), path="/version", threads=3) as load:
        load.wait_requests(50)
        done = ctl(c, "upgrade", "--max-unavailable", "1", "--wait", "--timeout", "60")
        load.wait_requests(50)
    print(done.stdout, done.stderr)
    print(f"LOAD during the failed rollout: {load.result.summary()}")
    assert done.returncode == 5, done.stdout + done.stderr
    rollout = c.store.cluster_state(TTL_MS).rollout
    failed = rollout.failed_node
    assert rollout.state is RolloutState.FAILED and failed
    assert f"rollout {rollout.id} failed at {failed}: rolled back" in done.stderr
    assert "answered 500" in done.stderr
    assert [e.step for e in rollout.entries() if e.node_id != failed] == [Step.PENDING] * 2
    assert load.result.failed == 0, load.result.summary()
    assert set(load.result.bodies) == {"r1"}

    def back_on_r1():
        r = c.records().get(failed)
        return r is not None and r.alive and r.info.state is NodeState.READY and r
    record = wait_until(back_on_r1, 10, what=f"{failed} ready again")
    assert record.info.release == "r1" and record.info.pid == before[failed]
    assert {n: r.info.pid for n, r in c.records().items()} == before  # nobody else touched
    assert upgrades_started(c) == {failed: 1}


def test_leader_killed_mid_rollout_the_next_one_finishes_it(cluster):
    c = cluster
    first = c.store.snapshot().lease
    before = {n: r.info.pid for n, r in c.records().items()}
    c.site.release("r2")
    c.site.switch("r2")
    with Load(list(c.ports.values()), path="/version", threads=3) as load:
        load.wait_requests(50)
        started = ctl(c, "upgrade", "--max-unavailable", "1", "--timeout", "60")
        assert started.returncode == 0, started.stderr

        def one_done():
            r = c.store.cluster_state(TTL_MS).rollout
            return sum(e.step is Step.DONE for e in r.entries()) >= 1
        wait_until(one_done, 60, interval=0.1, what="the first node upgraded")
        leader = c.store.snapshot().lease
        os.kill(c.agent_pid(leader.holder), signal.SIGKILL)  # the leader process dies
        killed = time.monotonic()

        def finished():
            r = c.store.cluster_state(TTL_MS).rollout
            return r.state is not RolloutState.RUNNING and r
        rollout = wait_until(finished, 120, interval=0.2, what="the rollout to end")
        resumed_in = time.monotonic() - killed
        load.wait_requests(50)
    figure("leader agent killed mid-rollout -> rollout finished", resumed_in)
    print(f"LOAD: {load.result.summary()}")
    assert rollout.state is RolloutState.DONE, rollout
    final = c.store.snapshot().lease
    assert final.epoch > leader.epoch >= first.epoch
    by = {e.extra.get("by") for e in events(c, ev.ROLLOUT_NODE_DONE)}
    assert len({e.epoch for e in events(c, ev.ROLLOUT_NODE_DONE)}) >= 2, by  # two leaders
    assert upgrades_started(c) == {"p1": 1, "p2": 1, "p3": 1}  # no node upgraded twice
    records = c.records()
    assert all(records[n].info.release == "r2" and records[n].info.pid != before[n]
               for n in before)
    assert load.result.failed == 0, load.result.summary()


def test_a_deposed_leaders_upgrade_command_is_rejected_by_every_node(cluster):
    c = cluster
    old = c.store.snapshot().lease
    agent = c.agent_pid(old.holder)
    pids = {n: r.info.pid for n, r in c.records().items()}
    os.kill(agent, signal.SIGSTOP)
    try:
        def new_leader():
            snap = c.store.snapshot()
            return snap.lease if snap.lease and snap.lease.holder != old.holder else None
        successor = wait_until(new_leader, 15, interval=0.05, what="a new leader")
    finally:
        os.kill(agent, signal.SIGCONT)
    wait_until(lambda: [e for e in events(c, ev.LEADER_STEPPED_DOWN) if e.node == old.holder],
               10, what="the deposed leader to step down")
    # Silent past the node TTL, it was declared dead; it is back as a new incarnation.
    wait_until(lambda: [e for e in events(c, ev.NODE_REJOINED) if e.node == old.holder], 10,
               what="the deposed leader's node to rejoin")
    c.ready(workers=None)  # the others may still run the workers they covered it with
    incarnations = {n: r.incarnation for n, r in c.records().items()}
    deposed = Lease(old.holder, old.epoch)
    # Everything the deposed leader can still try is refused: through Lua by Redis...
    command = NodeCommand("p1", incarnations["p1"], old.epoch, "upgrade", issued_by=old.holder)
    assert not c.store.send_command(deposed, command)
    assert c.store.issue_upgrade(deposed, "any", NodeRollout("p1"), command, "deposed") is \
        IssueResult.NOT_LEADER
    # ...and, for a write that was already on its way when it lost the lease, by each node.
    sent = {}
    for node, incarnation in incarnations.items():
        stale = NodeCommand(node, incarnation, old.epoch, "upgrade", issued_by=old.holder)
        c.store.client.rpush(c.store.keys.commands(node, incarnation), stale.encode())
        sent[node] = stale.id

    def rejected():
        found = {e.node: e for e in events(c, ev.COMMAND_REJECTED_STALE)}
        return found if set(found) == set(incarnations) else None
    found = wait_until(rejected, 10, what="every node to reject the stale upgrade")
    time.sleep(1.0)
    for node in incarnations:
        assert found[node].extra["id"] == sent[node]
        assert int(found[node].extra["highest_epoch"]) >= successor.epoch
    assert events(c, ev.UPGRADE_STARTED) == []
    assert {n: r.info.pid for n, r in c.records().items()} == pids  # no master was replaced
