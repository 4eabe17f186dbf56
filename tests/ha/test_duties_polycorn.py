"""The leader's duties on three real polycorn nodes over real Redis, under steady load
counted per port: a node killed (-9) is declared dead and its workers are run by the
survivors until it returns; Redis paused 8 s costs no false death; drain and undrain.
The figures (detection, capacity restore, failed requests) are printed: run with -s."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time

import pytest
from polycorn.ha import events as ev
from polycorn.ha.registry import NodeState
from polycorn.ha.store import StoreUnavailable
from polysupport import events, figure
from support.http import get
from support.load import Load
from support.procs import alive, wait_until
from test_agent import ctl

pytestmark = pytest.mark.slow

TTL = 3.0  # the default node TTL the nodes run with


def test_kill_9_of_a_node_survivors_cover_its_workers_then_give_them_back(cluster):
    c = cluster
    leader = c.store.snapshot().lease.holder
    victim = next(n for n in ("p3", "p2", "p1") if n != leader)
    survivors = [n for n in ("p1", "p2", "p3") if n != victim]
    loads = {n: Load(c.ports[n], path="/version", threads=2) for n in c.ports}
    for load in loads.values():
        load.start()
    try:
        for load in loads.values():
            load.wait_requests(30)
        # The victim's clients stop starting requests as it dies (as a load balancer
        # would once it fails a probe); what they had in flight at the kill is lost.
        stopper = threading.Thread(target=loads[victim].stop)
        stopper.start()
        killed_at = c.kill_node(victim)
        stopper.join(15)
        lost = loads[victim].result

        dead = wait_until(lambda: events(c, ev.NODE_DEAD), TTL + 3, interval=0.05,
                          what="node_dead")[0]
        detection = dead.time_ms / 1000 - killed_at

        def covered():
            records = c.records()
            return all(records[n].info.workers == 3 for n in survivors) and time.time()
        restored = wait_until(covered, 10, interval=0.05, what="survivors at 3 workers")
        restore = restored - dead.time_ms / 1000
        status = json.loads(ctl("status", "--json", "--redis", c.redis_url, "--cluster",
                                c.name).stdout)
        by_id = {n["node_id"]: n for n in status["nodes"]}

        c.start(victim)  # the node comes back (same id, same port): a new incarnation
        returned_at = time.time()

        def given_back():
            # The registry's target, and the processes themselves: the master reports its
            # ready count only on its next state message after retiring a worker.
            records = c.records()
            return all(records[n].info.workers_target == 2
                       and len(c.procs[n].workers()) == 2 + 1  # two workers and the agent
                       for n in survivors) and time.time()
        back = wait_until(given_back, 20, interval=0.05, what="survivors back at 2 workers")
        time.sleep(1.0)  # the retired workers finish what they hold under load
    finally:
        for load in loads.values():
            load.stop()
    figure("node killed -> node_dead event", detection)
    figure("node_dead -> survivors at 3 workers each", restore)
    figure("node restarted -> survivors back at 2 workers", back - returned_at)
    for n, load in loads.items():
        print(f"LOAD {n}{' (killed)' if n == victim else ''}: {load.result.summary()}")
    assert dead.node == victim and dead.extra["by"] == leader
    assert detection < TTL + 1.0
    assert restore < 3.0
    for n in survivors:
        assert loads[n].result.failed == 0, (n, loads[n].result.summary())
        assert by_id[n]["extra_workers"] == 1 and by_id[n]["covering"] == [victim]
    # A whole-node kill is seen either way: the heartbeat lapses, or (when the agent
    # outlives its master by a moment, as kill order allows) the agent reports it.
    assert by_id[victim]["state"] == "dead" and by_id[victim]["dead_reason"].startswith(
        ("no heartbeat for", "its agent reported its master gone"))
    assert lost.failed <= loads[victim].threads, lost.summary()  # its in-flight requests only
    kinds = [(e.kind, e.node) for e in events(
        c, ev.NODE_DEAD, ev.CAPACITY_GRANTED, ev.NODE_REJOINED, ev.CAPACITY_RETURNED)]
    assert kinds == [(ev.NODE_DEAD, victim)] + sorted((ev.CAPACITY_GRANTED, n)
                                                      for n in survivors) + \
        [(ev.NODE_REJOINED, victim)] + sorted((ev.CAPACITY_RETURNED, n) for n in survivors)


def test_redis_paused_8s_no_node_declared_dead(cluster, redis_farm):
    c = cluster
    with Load(list(c.ports.values()), path="/version", threads=3) as load:
        load.wait_requests(50)
        with c.store.client.pipeline() as pipe:  # one round trip: CLIENT PAUSE blocks us too
            pipe.execute_command("CLIENT", "PAUSE", "8000", "ALL")
            pipe.execute()
        paused_at = time.monotonic()
        time.sleep(8.0)
        during = load.result.ok

        def whole():
            try:
                snap, records = c.store.nodes(int(TTL * 1000))
            except StoreUnavailable:
                return False
            ok = [r for r in records if r.alive and r.info.state is NodeState.READY]
            return snap.lease is not None and len(ok) == 3
        wait_until(whole, 20, interval=0.1, what="the cluster whole again")
        figure("Redis paused 8 s -> cluster whole again", time.monotonic() - paused_at)
        time.sleep(TTL + 1.0)  # a full node TTL under the new leader
    print(f"\nLOAD during CLIENT PAUSE: {load.result.summary()}")
    assert load.result.failed == 0, load.result.summary()
    assert during > 100
    assert events(c, ev.NODE_DEAD, ev.CAPACITY_GRANTED) == []
    paused = events(c, ev.DUTIES_PAUSED)
    print(f"duties paused: {[(e.node, e.reason) for e in paused]}")
    assert paused and paused[0].extra["cause"] == "redis_calls"  # the valve, made visible
    assert all(r.info.workers_target == 2 for r in c.records().values())


def test_drain_and_undrain_through_the_leader(cluster):
    c = cluster
    node = "p2"
    args = ["--redis", c.redis_url, "--cluster", c.name]
    with Load(c.ports[node], path="/version", threads=2) as load:
        load.wait_requests(20)
        done = ctl("drain", node, *args)
        assert done.returncode == 0, done.stderr
        assert "p2 is draining" in done.stdout
        assert get(c.ports[node], "/health")[0] == 503
        load.wait_requests(50)  # still serving what it is sent
        assert c.records()[node].info.state is NodeState.DRAINING
        text = ctl("status", *args).stdout
        assert "draining" in text
        done = ctl("undrain", node, *args)
        assert done.returncode == 0, done.stderr
        assert get(c.ports[node], "/health")[0] == 200
    assert load.result.failed == 0, load.result.summary()
    assert [e.kind for e in events(c, ev.DRAIN_REQUESTED, ev.UNDRAIN_REQUESTED)] == [
        ev.DRAIN_REQUESTED, ev.UNDRAIN_REQUESTED]
    assert ctl("drain", "nope", *args).returncode == 2


def test_a_drained_node_stays_drained_through_its_usr2_upgrade(cluster):
    """The drain passes from the old master to the new one with the sockets: the health
    path never answers 200 during or after the upgrade, before any leader re-sends it."""
    c = cluster
    node = "p2"
    args = ["--redis", c.redis_url, "--cluster", c.name]
    assert ctl("drain", node, *args).returncode == 0
    old_master = c.records()[node].info.pid
    seen: dict[int, int] = {}
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            try:
                status = get(c.ports[node], "/health", timeout=5)[0]
            except OSError:
                status = -1
            seen[status] = seen.get(status, 0) + 1
            time.sleep(0.005)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        os.kill(old_master, signal.SIGUSR2)

        def upgraded():
            record = c.records().get(node)
            return (record is not None and record.info.pid != old_master
                    and record.info.state is NodeState.DRAINING and record)
        wait_until(upgraded, 30, interval=0.05, what="p2's new master, draining")
        wait_until(lambda: not alive(old_master), 30, what="the old master gone")
        time.sleep(0.5)
    finally:
        stop.set()
        prober.join(10)
    assert seen.get(503, 0) > 20, seen
    assert set(seen) == {503}, seen  # never a 200, never a refused connection


def test_a_drain_reaches_every_master_of_a_node(cluster, tmp_path):
    """With --masters 2 the cluster agent runs beside one master only; the drain it
    carries out must still turn every worker of the node (both masters') to 503, and
    survive the loss of the master that received it."""
    from support.procs import free_port

    c = cluster
    port = free_port()
    pid_path = tmp_path / "p4.pid"
    c.ports["p4"] = port
    c.procs["p4"] = c.polycorn(
        "-b", f"127.0.0.1:{port}", "-w", "4", "--masters", "2",
        "--handoff", str(tmp_path / "p4.sock"), "-p", str(pid_path),
        "--redis", c.redis_url, "--cluster", c.name, "--node-id", "p4",
        "--health-check", "/health", "testapp:application", wait_port=port,
        cwd=c.site.current, env={"PWD": str(c.site.current)})
    c.ready(4, workers=None)
    args = ["--redis", c.redis_url, "--cluster", c.name]

    def master_of(worker: int) -> int:
        with open(f"/proc/{worker}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])

    def probe(least: int = 40) -> dict[int, int]:
        """Health statuses seen until at least `least` probes were made and the node's
        /pid answers came from workers of both masters (the kernel spreads new
        connections over all four workers, unevenly on a busy machine)."""
        statuses: dict[int, int] = {}
        masters: set[int] = set()
        deadline = time.monotonic() + 20
        while (len(masters) < 2 or sum(statuses.values()) < least) \
                and time.monotonic() < deadline:
            status = get(port, "/health")[0]
            statuses[status] = statuses.get(status, 0) + 1
            with contextlib.suppress(OSError, ValueError):
                masters.add(master_of(int(get(port, "/pid")[1])))
        assert len(masters) == 2, f"only one master's workers answered: {masters}"
        return statuses

    assert ctl("drain", "p4", *args).returncode == 0
    wait_until(lambda: set(probe(least=8)) == {503}, 10, what="p4 drained")
    statuses = probe()
    assert set(statuses) == {503}, statuses
    owner = int(pid_path.read_text())
    os.kill(owner, signal.SIGKILL)  # the master the drain was sent to
    wait_until(lambda: int(pid_path.read_text() or 0) not in (0, owner), 15,
               what="the other master owning the hand-off path")
    time.sleep(1.0)  # the killed master restarted by its peer, with new workers
    statuses = probe()
    assert set(statuses) == {503}, statuses
    assert ctl("undrain", "p4", *args).returncode == 0
    wait_until(lambda: set(probe(least=20)) == {200}, 10, what="p4 undrained everywhere")
