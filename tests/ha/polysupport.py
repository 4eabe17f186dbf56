"""Real polycorn nodes in a Capistrano-style site (releases/<id> + a `current` symlink),
for the leader's duties tests: each node serves tests/apps/testapp.py from `current`,
so a switched symlink plus a USR2 (what a rollout sends) brings the new release."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from polycorn.ha.registry import NodeState
from support.procs import ROOT, free_port, kill_all, wait_until
from test_agent import TTL_MS, observer

TESTAPP = (ROOT / "tests" / "apps" / "testapp.py").read_text()


class Site:
    """releases/<name>/testapp.py (+ VERSION) and an atomically switched `current`."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.current = base / "current"

    def release(self, name: str, health: int = 200) -> Path:
        rel = self.base / "releases" / name
        rel.mkdir(parents=True)
        code = TESTAPP.replace('int(os.environ.get("HEALTH_STATUS", "200"))', str(health))
        (rel / "testapp.py").write_text(code)
        (rel / "VERSION").write_text(name)
        return rel

    def switch(self, name: str) -> None:
        tmp = self.base / "current.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.base / "releases" / name)
        os.replace(tmp, self.current)


@dataclass
class Cluster:
    """Three (or n) real nodes p1..pn, their ports and an observer store."""

    redis_url: str
    name: str
    site: Site
    polycorn: object  # the conftest fixture that starts (and cleans up) polycorn processes
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.store = observer(self.redis_url, self.name)

    def start(self, node_id: str, port: int | None = None) -> None:
        port = port or self.ports.get(node_id) or free_port()
        self.ports[node_id] = port
        self.procs[node_id] = self.polycorn(
            "-b", f"127.0.0.1:{port}", "-w", "2", "--redis", self.redis_url,
            "--cluster", self.name, "--node-id", node_id, "--health-check", "/health",
            "--graceful-timeout", "10", "testapp:application", wait_port=port,
            cwd=self.site.current, env={"PWD": str(self.site.current)})

    def records(self) -> dict:
        return {r.info.node_id: r for r in self.store.nodes(TTL_MS)[1]}

    def ready(self, n: int | None = None, workers: int | None = 2):
        """The snapshot once n nodes are alive, ready (with `workers`, unless None) and a
        leader leads."""
        n = n or len(self.ports)

        def settled():
            snap, records = self.store.nodes(TTL_MS)
            ok = [r for r in records if r.alive and r.info.state is NodeState.READY
                  and workers in (None, r.info.workers)]
            return snap.lease is not None and len(ok) == n and snap
        return wait_until(settled, 30, interval=0.05, what=f"{n} ready nodes and a leader")

    def agent_pid(self, node_id: str) -> int:
        """The cluster agent of the node's current master, from the master's own log line
        ("sidecar cluster-agent started (pid N)"), the last one if it was restarted."""
        master = self.records()[node_id].info.pid
        pattern = re.compile(rf"\[{master}\] \[INFO\] sidecar cluster-agent started "
                             rf"\(pid (\d+)\)")
        found = pattern.findall(self.procs[node_id].log())
        assert found, f"no agent started by master {master} of {node_id}"
        return int(found[-1])

    def kill_node(self, node_id: str) -> float:
        """kill -9 of the whole node (master, workers, agent); the wall time of the kill."""
        proc = self.procs[node_id]
        pids = [proc.pid, *proc.track()]
        when = time.time()
        kill_all(pids, signal.SIGKILL)
        return when


class Sampler:
    """Every 100 ms: how many nodes are not ready in the registry, and how many hold an
    upgrade slot in the rollout (the Lua-guarded set). Keeps the maximum of each."""

    def __init__(self, cluster: Cluster, expected: int) -> None:
        self.cluster = cluster
        self.expected = expected
        self.max_not_ready = 0
        self.max_slots = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        store = self.cluster.store
        while not self._stop.wait(0.1):
            view = store.cluster_state(TTL_MS)
            ready = sum(1 for r in view.records
                        if r.alive and r.info.state is NodeState.READY)
            self.max_not_ready = max(self.max_not_ready, self.expected - ready)
            if view.rollout is not None:
                self.max_slots = max(self.max_slots, len(view.rollout.slots))
            self.samples += 1


def events(c: Cluster, *kinds: str) -> list:
    return [e for e in c.store.read_events(count=10_000) if e.kind in kinds]


def figure(what: str, value: float, unit: str = "s") -> None:
    print(f"\nFIGURE {what}: {value:.2f}{unit}")
