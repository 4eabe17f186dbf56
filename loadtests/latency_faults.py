"""The latency faults: a latency proxy is put on a path before anything uses it, so a
delay can be switched on (and off) later. slow-redis: each node reaches Redis through
a proxy of its own. slow-front (--netns only): HAProxy reaches each node through one.

Loopback: the proxy listens on a free loopback port and forwards to the one Redis
server; the node's --redis URL names the proxy. A Sentinel group cannot be put behind
it that way (the Sentinels answer the primary's real address, which the node then
dials directly), so with Sentinel the fault needs --netns. There the proxy runs in the
node's namespace in transparent mode and an nftables redirect there sends it every TCP
connection to a Redis server or a Sentinel (its own connections carry a mark the rule
spares): the node keeps its real URL, failovers included. What the delay cost (the
node declared dead, the leader stepping down) is read from the history afterwards.
slow-front needs --netns: HAProxy dials the address each node registered, so the
proxies sit in the front's namespace behind one redirect per node (loopback has no
place to put them without changing what the nodes register).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from polycorn.ha.haproxy.config import Checks

from loadtests.latency_proxy import DEFAULT_MARK, ProxyError, control

NETNS_PORT = 16390  # the proxy's port inside a node's own namespace (nothing else there)
FRONT_PORTS = 16400  # + k: the k-th node's proxy in the front's namespace
READY_TIMEOUT = 10.0
DEFAULT_DELAY_MS = 200.0


class LatencyPath:
    """One path with a latency proxy on it (a node's to Redis, or the front's to a node):
    the proxy's process and its control socket."""

    def __init__(self, node_id: str, run_dir: Path, tracker: Any, kind: str = "") -> None:
        self.node_id = node_id
        self.control_path = run_dir / f"lat-{kind}{node_id}.sock"
        self.log_path = run_dir / f"lat-{kind}{node_id}.log"
        self.tracker = tracker
        self.pid = 0

    def _spawn(self, wrap: list[str], argv: list[str]) -> int:
        proc = self.tracker.spawn([*wrap, sys.executable, "-m", "loadtests.latency_proxy",
                                   "--control", str(self.control_path), *argv],
                                  log_path=self.log_path, cwd=Path(__file__).resolve().parents[1])
        self.pid = proc.pid
        return self._wait_ready(proc)

    def start_front(self, front: Any, node: Any, index: int, network: Any) -> None:
        """HAProxy's path to `node`: a proxy in the front's namespace, and a redirect of
        the front's connections to the node's address to it."""
        port = FRONT_PORTS + index
        self._spawn(network.wrap("front"), ["--name", f"front-{self.node_id}", "--listen",
                                            f"127.0.0.1:{port}", "--transparent"])
        network.redirect("front", f"latf{self.node_id}", [node.host], port, DEFAULT_MARK)

    def start_redis(self, redis: Any, network: Any = None) -> str:
        """Start the proxy; returns the Redis URL the node must be given."""
        argv = ["--name", f"{self.node_id}-redis"]
        if network is None:
            if redis.mode != "single":
                raise ProxyError("slow-redis without --netns needs --redis-mode single: the "
                                 "Sentinels would hand the node the primary's real address")
            server = redis.current_primary()
            argv += ["--listen", "127.0.0.1:0", "--upstream", f"{server.host}:{server.port}"]
            wrap: list[str] = []
        else:
            argv += ["--listen", f"127.0.0.1:{NETNS_PORT}", "--transparent"]
            wrap = network.wrap(self.node_id)
        port = self._spawn(wrap, argv)
        if network is None:
            return f"redis://127.0.0.1:{port}/0"
        peers = [s.host for s in (redis.group.servers if redis.group else [redis.single])]
        network.redirect(self.node_id, f"lat{self.node_id}", peers + redis.sentinel_hosts(),
                         NETNS_PORT, DEFAULT_MARK)
        return redis.url

    def _wait_ready(self, proc: Any) -> int:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                return int(control(self.control_path, "status", timeout=1.0)["port"])
            except ProxyError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ProxyError(f"the latency proxy of {self.node_id} did not start; see "
                                     f"{self.log_path}") from None
                time.sleep(0.05)

    def delay(self, ms: float, jitter_ms: float = 0.0) -> None:
        control(self.control_path, "set", up_ms=ms, down_ms=ms, jitter_ms=jitter_ms)


def start_front_paths(front: Any, cluster: Any, run_dir: Path, tracker: Any,
                      network: Any) -> None:
    """Before HAProxy starts: a proxy on its path to every node (slow-front)."""
    for index, node in enumerate(cluster.nodes.values()):
        node.front_path = LatencyPath(node.node_id, run_dir, tracker, kind="front-")
        node.front_path.start_front(front, node, index, network)


def unavailable_reason(cluster: Any, action: str = "slow-redis") -> str | None:
    """Why this cluster cannot slow that path, or None."""
    if action == "slow-front":
        if getattr(cluster, "network", None) is None:
            return "slow-front needs --netns (HAProxy dials the nodes' registered addresses)"
        return None  # a node without a front path is named when the fault runs
    redis = getattr(cluster, "redis", None)
    if redis is None or not getattr(cluster, "local", False):
        return "slow-redis needs the runner's own Redis and nodes"
    if getattr(cluster, "network", None) is None and redis.mode != "single":
        return ("slow-redis with Sentinel needs --netns (the Sentinels hand out the primary's "
                "real address), or --redis-mode single")
    return None


def slow_path(ctx: Any, rec: Any, node: Any) -> Generator[float, None, None]:
    """Delay the node's traffic with Redis and the Sentinels (slow-redis), or HAProxy's
    with the node (slow-front), by `delay` ms each way for the fault's duration; the
    delay is taken off again also when the run is cut short."""
    front = rec.fault.action == "slow-front"
    path = getattr(node, "front_path" if front else "redis_path", None)
    if path is None:
        raise RuntimeError(f"{node.node_id} has no latency proxy on its path to "
                           f"{'the front (it joined after the front started)' if front else 'Redis'}")
    ms = rec.fault.delay if rec.fault.delay is not None else DEFAULT_DELAY_MS
    jitter = rec.fault.jitter or 0.0
    path.delay(ms, jitter)
    rec.started = time.time()
    rec.pids = [path.pid]
    rec.detail = (f"{ms:g}{f' (+ up to {jitter:g})' if jitter else ''} ms each way on {'the front' if front else 'its'} path to "
                  f"{'it' if front else 'Redis'} (proxy pid {path.pid})")
    try:
        yield rec.fault.duration or 0.0
    finally:
        path.delay(0)
        rec.ended = time.time()
    rec.detail += f"; off after {rec.fault.duration:g}s"


def history_facts(rec: Any, records: list[dict[str, Any]], shift: float,
                  node_ttl: float) -> dict[str, Any]:
    """What the delay cost, from the history (monotonic times; `shift` = monotonic minus
    Unix time), within the fault and one node TTL after it: the node's successful
    heartbeats and the longest silence between two, whether it was declared dead, which
    node held the lease before and who was elected."""
    if rec.started is None:
        return {}
    start = rec.started + shift
    end = (rec.ended or rec.started) + shift + node_ttl
    node = rec.node
    within = [r for r in records if start <= r["t"] <= end]
    # Successful heartbeats only: a cycle whose read times out records no write at all.
    beats = [r["t"] for r in records if r.get("k") == "store" and r.get("node") == node and (
        (r.get("op") == "heartbeat" and r.get("res") in ("refreshed", "rejoined"))
        or (r.get("op") == "register" and isinstance(r.get("res"), int)))]
    before = max((t for t in beats if t <= start), default=start)
    seq = [before, *(t for t in beats if before < t <= end)]
    seq.append(next((t for t in beats if t > end), end))  # a silence to the window's end
    gaps = [b - a for a, b in zip(seq, seq[1:], strict=False)]
    deaths = [r for r in within if r.get("k") == "store" and r.get("op") == "declare_dead"
              and r.get("node") == node and r.get("res") is True]
    leader_before = None
    for r in records:
        if r["t"] > start:
            break
        if _held_lease(r):
            leader_before = r.get("holder") or r.get("node")
    elected = [r for r in within if _held_lease(r) and r.get("op") == "acquire_lease"]
    return {"heartbeats": sum(start <= t <= end for t in beats),
            "longest_silence_s": round(max(gaps), 2),
            "declared_dead_s": round(deaths[0]["t"] - start, 2) if deaths else None,
            "leader_before": leader_before,
            "elected": (f"{elected[0].get('node')} epoch {elected[0].get('res')} at "
                        f"+{elected[0]['t'] - start:.2f}s") if elected else None}


def _held_lease(r: dict[str, Any]) -> bool:
    """A successful acquire (its result is the epoch) or renewal (True)."""
    return r.get("k") == "store" and r.get("op") in ("acquire_lease", "renew_lease") \
        and r.get("res") not in (False, None, "unavailable")


def takes_node_out(fault: Any) -> bool:
    """A slow-front whose round trip (its delay each way) reaches HAProxy's check
    timeout: the generated config's checks take the node out of rotation, by design,
    as they do a node cut from the front."""
    return fault.action == "slow-front" and 2 * (fault.delay or 0) >= Checks().timeout_ms
