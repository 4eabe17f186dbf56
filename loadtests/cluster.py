"""The cluster under test: started here (private Redis + N local nodes) or attached to.

A local node is one `polycorn` command on its own loopback port, with
`--masters M --handoff` when M > 1, a pid file whose `.m<i>` status files name
each master, and its own log, whose "Booting worker with pid" lines tell its
workers apart from its cluster agent. An attached cluster is known only through
its registry (`polycorn-ctl status --json`): one registered master pid per node.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from polycorn.ha.process_tracker import ProcessTracker, alive, descendants, named_pids, parent
from polycorn.ha.redis_launcher import RedisServer, SentinelGroup
from polycorn.server import identity

from loadtests.latency_faults import LatencyPath
from loadtests.scenario import ClusterShape
from loadtests.targets import TargetError, normalize_url, read_status

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 45.0
_WORKER_LINE = re.compile(rb"Booting worker with pid: (\d+)")


class Unavailable(Exception):
    """This cluster cannot perform that fault; the message says why."""


class ClusterError(RuntimeError):
    """The cluster could not be started or read."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held together while picking, so never twice the same)."""
    holders = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            holders.append(s)
        return [s.getsockname()[1] for s in holders]
    finally:
        for s in holders:
            s.close()


class LocalNode:
    def __init__(self, node_id: str, port: int, run_dir: Path, shape: ClusterShape,
                 redis_url: str | None, cluster_name: str, tracker: ProcessTracker,
                 network: Any = None) -> None:
        self.node_id = node_id
        self.port = port
        # With --netns the node is a host of its own: its namespace, its address.
        self.host = network.add_host(node_id) if network else "127.0.0.1"
        self.wrap: list[str] = network.wrap(node_id) if network else []
        self.url = f"http://{self.host}:{port}"
        self.shape = shape
        self.pidfile = run_dir / f"{node_id}.pid"
        self.handoff = run_dir / f"{node_id}.sock"
        self.log_path = run_dir / f"{node_id}.log"
        self.redis_url = redis_url
        self.cluster_name = cluster_name
        self.redis_path: Any = None  # its latency proxy to Redis (slow-redis), if any
        self.front_path: Any = None  # the front's latency proxy to it (slow-front), if any
        self.tracker = tracker
        self.run_dir = run_dir
        # Its processes' proc name: titles `polycorn: master [chaos-n1@TAG]`, and how the
        # tracker finds them (see ha/process_tracker.py).
        self.proc_name = tracker.proc_name(f"{cluster_name}-{node_id}")

    def argv(self) -> list[str]:
        s = self.shape
        argv = [sys.executable, "-m", "polycorn.server.main", "-n", self.proc_name,
                "-b", f"{self.host}:{self.port}",
                "-w", str(s.workers), "-k", s.worker_class, "-p", str(self.pidfile),
                "--health-check", "/", "--graceful-timeout", "5"]
        if s.worker_class == "thread":
            argv += ["--threads", str(s.threads)]
        if s.masters > 1:
            argv += ["--masters", str(s.masters), "--handoff", str(self.handoff)]
        if self.redis_url:
            argv += ["--redis", self.redis_url, "--cluster", self.cluster_name,
                     "--node-id", self.node_id]
        return [*argv, s.app]

    def start(self) -> None:
        env = dict(os.environ)
        for key in ("POLYCORN_CMD_ARGS", "GUNICORN_CMD_ARGS", "POLYCORN_MASTER_INDEX",
                    "POLYCORN_NODE_ID"):
            env.pop(key, None)
        app_dir = Path(self.shape.app_dir)
        self.tracker.spawn([*self.wrap, *self.argv()], log_path=self.log_path,
                           cwd=app_dir if app_dir.is_absolute() else ROOT / app_dir, env=env)

    def masters(self) -> dict[int, int]:
        """index -> pid of each live master, from the pid file's `.m<i>` status files
        (mid-upgrade the old master's: it serves until the new one is promoted). A record
        counts only while its stamp matches the live process: a killed master's pid may
        belong to anything by now."""
        out = {}
        for i in range(self.shape.masters):
            pid = identity.verified_pid(identity.read_record(f"{self.pidfile}.m{i}"))
            if pid:
                out[i] = pid
        return out

    def workers(self) -> list[int]:
        """Live workers: pids the masters' log announced, still children of a master."""
        masters = set(self.masters().values())
        try:
            text = self.log_path.read_bytes()
        except OSError:
            return []
        pids = {int(m) for m in _WORKER_LINE.findall(text)}
        return sorted(p for p in pids if alive(p) and parent(p) in masters)

    def pids(self) -> list[int]:
        """Every live process of the node: masters (peers and successors too), workers and
        agent, by the node's proc name, and anything they started."""
        roots = named_pids(self.proc_name)
        return sorted({*roots, *descendants(*roots)})

    def ready(self) -> bool:
        return (port_open(self.port, self.host) and len(self.masters()) == self.shape.masters
                and len(self.workers()) == self.shape.workers)

    def upgrade_argv(self) -> list[str]:
        """`polycorn --upgrade PIDFILE`: every master in turn, health-gated; exit 0 promoted."""
        return [sys.executable, "-m", "polycorn.server.main", "--upgrade", str(self.pidfile)]

    def describe(self) -> str:
        return f"{self.node_id} {self.url} masters {sorted(self.masters().values())}"


class ClusterRedis:
    """The runner's own Redis: one server, or a Sentinel group (a master, a replica, three
    sentinels), with the append-only file on so a restart after a crash keeps the
    cluster's epochs; every process runs under the tracker."""

    SERVICE = "polycorn"

    def __init__(self, tracker: ProcessTracker, directory: Path, mode: str,
                 network: Any = None, min_replicas: int = 0) -> None:
        self.mode = mode  # "single" or "sentinel"
        self.min_replicas = min_replicas
        self.network = network  # with --netns each server is a host of its own
        self.tracker = tracker
        self.directory = directory
        self.single: RedisServer | None = None
        self.group: SentinelGroup | None = None

    def place(self, role: str) -> tuple[str, list[str]]:
        if self.network is None:
            return "127.0.0.1", []
        return self.network.add_host(role), self.network.wrap(role)

    def start(self) -> None:
        if self.mode == "sentinel":
            self.group = SentinelGroup(self.tracker, self.directory, self.SERVICE,
                                       append_only=True, place=self.place,
                                       min_replicas=self.min_replicas)
        else:
            host, wrap = self.place("redis-a")
            self.single = RedisServer(self.tracker, self.directory, append_only=True,
                                      host=host, wrap=wrap).start()

    def sentinel_hosts(self) -> list[str]:
        return [s.host for s in self.group.sentinels] if self.group else []

    def role_of(self, server: RedisServer) -> str:
        """The host name (redis-a, redis-b) of a data server, for a fault on its link."""
        if self.group is None or server is self.group.master:
            return "redis-a"
        return "redis-b"

    @property
    def url(self) -> str:
        return self.group.url if self.group else self._single().url

    def current_primary(self) -> RedisServer:
        return self.group.current_master() if self.group else self._single()

    def failover(self) -> str:
        if self.group is None:
            raise RuntimeError("no Sentinel group: start the runner with --redis-mode sentinel")
        before = self.group.request_failover()
        return f"SENTINEL FAILOVER {self.SERVICE} (master was port {before})"

    def _single(self) -> RedisServer:
        if self.single is None:
            raise RuntimeError("the cluster's Redis is not started")
        return self.single


class LocalCluster:
    """A private Redis and N nodes of one app, all on 127.0.0.1, all torn down by pid."""

    local = True

    def __init__(self, shape: ClusterShape, run_dir: Path, tracker: ProcessTracker, *,
                 redis_mode: str = "single", name: str = "chaos", network: Any = None,
                 min_replicas: int = 0, slow_paths: bool = False) -> None:
        self.shape = shape
        self.run_dir = run_dir
        self.tracker = tracker
        self.name = name
        self.network = network
        self.redis = (ClusterRedis(tracker, run_dir, redis_mode, network, min_replicas)
                      if redis_mode != "none" else None)
        self.nodes: dict[str, LocalNode] = {}
        # slow-redis: every node reaches Redis through a latency proxy from its start.
        self.slow_paths = slow_paths and self.redis is not None

    def _start_node(self, node: LocalNode) -> None:
        if self.slow_paths:
            node.redis_path = LatencyPath(node.node_id, self.run_dir, self.tracker)
            node.redis_url = node.redis_path.start_redis(self.redis, self.network)
        self.nodes[node.node_id] = node
        node.start()

    @property
    def redis_url(self) -> str | None:
        return self.redis.url if self.redis else None

    def start(self, say=print) -> None:
        if self.redis:
            self.redis.start()
            say(f"redis: {self.redis.url} ({self.redis.mode})")
        ports = free_ports(self.shape.nodes)
        for node_id, port in zip(self.shape.node_ids(), ports, strict=True):
            node = LocalNode(node_id, port, self.run_dir, self.shape, self.redis_url, self.name,
                             self.tracker, self.network)
            self._start_node(node)
        self.wait_ready()
        for node in self.nodes.values():
            say(f"node {node.describe()} workers {node.workers()}")

    def add_node(self) -> LocalNode:
        """One more node, n<k+1>, on a free port (join-node); started, not yet ready."""
        node_id = f"n{len(self.nodes) + 1}"
        while node_id in self.nodes:
            node_id = f"n{int(node_id[1:]) + 1}"
        node = LocalNode(node_id, free_ports(1)[0], self.run_dir, self.shape, self.redis_url,
                         self.name, self.tracker, self.network)
        self._start_node(node)
        return node

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            waiting = [n.node_id for n in self.nodes.values() if not n.ready()]
            if not waiting and self.redis:
                status = self.status_or_none()
                live = {n["node_id"] for n in (status or {}).get("nodes", []) if n.get("alive")}
                if not status or not status.get("leader") or live != set(self.nodes):
                    waiting = ["registry (every node alive and a leader)"]
            if not waiting:
                return
            if time.monotonic() > deadline:
                logs = ", ".join(str(n.log_path) for n in self.nodes.values())
                raise ClusterError(f"not ready after {timeout:g}s: {', '.join(waiting)}; "
                                   f"see {logs}")
            time.sleep(0.2)

    def status(self) -> dict[str, Any]:
        if not self.redis:
            raise Unavailable("the cluster runs without Redis (--redis-mode none)")
        return read_status(self.name, self.redis.url)

    def status_or_none(self) -> dict[str, Any] | None:
        try:
            return self.status()
        except (TargetError, ValueError):
            return None


class AttachedNode:
    """A node of someone else's cluster, seen through the registry only."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.node_id = str(record["node_id"])
        self.url = normalize_url(record["address"])
        self.host = str(record.get("host") or "")
        self.record = record

    def masters(self) -> dict[int, int]:
        return {0: int(self.record["pid"])}

    def workers(self) -> list[int]:
        raise Unavailable("attach mode: a worker cannot be told from the cluster agent "
                          "without the node's own log; start the cluster with the runner")

    def pids(self) -> list[int]:
        pid = int(self.record["pid"])
        return [pid, *descendants(pid)] if alive(pid) else []

    def upgrade_argv(self) -> list[str]:
        raise Unavailable("attach mode: the node's pid file is unknown; use `polycorn "
                          "--upgrade PIDFILE` on the node, or start the cluster with the runner")


class AttachedCluster:
    """A running cluster, from its registry; Redis belongs to someone else."""

    local = False
    redis = None

    def __init__(self, name: str, redis_url: str) -> None:
        self.name = name
        self.redis_url = redis_url
        self.nodes: dict[str, AttachedNode] = {}

    def start(self, say=print) -> None:
        status = self.status()
        for record in status.get("nodes", []):
            if record.get("alive") and record.get("address"):
                self.nodes[str(record["node_id"])] = AttachedNode(record)
        if not self.nodes:
            raise ClusterError(f"cluster {self.name!r} has no live node at {self.redis_url}")
        for node in self.nodes.values():
            say(f"node {node.node_id} {node.url} (registered master pid {node.record['pid']})")

    def refresh(self) -> None:
        """Registered pids change (restarts, upgrades): read them again before a fault."""
        for record in self.status().get("nodes", []):
            node = self.nodes.get(str(record.get("node_id")))
            if node is not None and record.get("alive"):
                node.record = record

    def status(self) -> dict[str, Any]:
        return read_status(self.name, self.redis_url)

    def same_host(self, node: AttachedNode) -> bool:
        return node.host in ("", socket.gethostname())
