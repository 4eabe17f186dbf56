"""The fault actions, each a generator the timeline resumes: it yields the seconds to
wait before its next step (SIGCONT after a pause, polling an upgrade) and records
what it did, on which pids, and when it ended, in a FaultRecord.

A fault the cluster cannot perform is marked unavailable before the run, with the
reason, and never faked. What a fault may cost (`allowed_failures`) is stated
here, once: zero for what Polycorn claims to survive, the in-flight requests for
a killed worker, no bound for a killed or paused node without a front; behind a
front (HAProxy driven by the registry) zero for a killed or joining node, and for a
paused node what HAProxy sent it before marking it down (front_facts, after the run).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polycorn.ha.process_tracker import ProcessTracker, signal_pids

from loadtests.latency_faults import slow_path
from loadtests.latency_faults import unavailable_reason as latency_unavailable
from loadtests.scenario import NETNS_ACTIONS, NODE_ALIASES, ClusterShape, Fault

Steps = Generator[float, None, None]
UPGRADE_POLL = 0.2
ELECTION_POLL = 0.25  # seconds between two registry reads while a new leader is awaited
ELECTION_WAIT = 20.0  # then the old leader (or none) is reported as still in place
JOIN_READY_TIMEOUT = 45.0
JOIN_SERVES_WITHIN = 2.0
UNDRAIN_TRIES = 3  # a drain fault never leaves its node drained while Redis comes back  # seconds from ready to the first request through the front


@dataclass
class FaultRecord:
    fault: Fault
    outcome: str = "pending"  # pending, running, done, failed, unavailable
    node: str | None = None  # the node it acted on, after resolving leader/follower
    started: float | None = None  # Unix time of the action
    ended: float | None = None  # when a lasting fault ended (resumed, restarted, promoted)
    pids: list[int] = field(default_factory=list)
    detail: str = ""
    allowed_failures: int | None = None  # None: any loss is expected
    facts: dict[str, Any] = field(default_factory=dict)  # measured: election, join, front

    def as_json(self, t0: float) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - t0, 3)

        return {"at": self.fault.at, "action": self.fault.action, "label": self.fault.label,
                "target": self.fault.node, "node": self.node, "outcome": self.outcome,
                "started_s": rel(self.started), "ended_s": rel(self.ended), "pids": self.pids,
                "detail": self.detail, "allowed_failures": self.allowed_failures,
                "facts": self.facts}


def allowed_failures(fault: Fault, shape: ClusterShape | None, front: bool = False) -> int | None:
    """How many failed requests this fault may cost and still count as survived.

    A paused node behind a front gets its bound after the run (front_facts): what
    HAProxy sent it between the SIGSTOP and marking it down. A stopped host still
    completes TCP handshakes, so connection retries cannot save those requests.
    """
    masters = shape.masters if shape else 1
    if fault.action in ("kill-node", "join-node") and front:
        return 0
    if fault.action == "join-node":
        # Without a front the new node gets no load (Locust's list is fixed) and its
        # window inherits whatever an earlier lost node still costs.
        return None
    if fault.action == "kill-worker":
        return shape.worker_concurrency() if shape else None
    if fault.action in ("kill-master", "kill-leader"):
        # A peer master keeps accepting on the same listening socket; alone, it is a node.
        return 0 if masters > 1 else None
    if fault.action in ("kill-node", "pause-node", "cut-front", "lossy-node", "slow-front"):
        # Behind a front, cut-front, lossy-node, slow-front get their bound after the run
        # (front_facts: the requests HAProxy had on the node during the fault). Without
        # one, lossy-node has none: Locust's users keep their node, and what a lossy link
        # costs them (retransmissions outlasting the client's timeout) is not counted
        # per request anywhere but in the failures themselves.
        return None
    return 0  # usr2, hup, stop-redis, sentinel-failover, rolling-upgrade, slow-redis


def ctl_has_command(name: str) -> bool:
    done = subprocess.run([sys.executable, "-m", "polycorn.ha.ctl", name, "--help"],
                          capture_output=True, timeout=20)
    return done.returncode == 0


def unavailable_reason(fault: Fault, cluster: Any) -> str | None:
    """Why this cluster cannot perform the fault, or None when it can."""
    if fault.action in ("slow-redis", "slow-front"):
        return latency_unavailable(cluster, fault.action)
    return _unavailable_reason(fault, cluster)


def _unavailable_reason(fault: Fault, cluster: Any) -> str | None:
    action = fault.action
    redis = cluster.redis
    if action in NETNS_ACTIONS and getattr(cluster, "network", None) is None:
        return f"{action} needs hosts with their own network: run with --netns (root)"
    if action in ("cut-redis", "cut-redis-oneway", "split-primary") and redis is None:
        return f"{action} needs the runner's own Redis"
    if action == "split-primary" and redis.mode != "sentinel":
        return "split-primary needs the runner's own Sentinel group: --redis-mode sentinel"
    if action in ("kill-leader", "rolling-upgrade", "drain-node") and not cluster.redis_url:
        return f"{action} needs a cluster in Redis (this one runs without)"
    if action == "stop-redis" and redis is None:
        return "stop-redis: the runner does not own this Redis (attach mode)"
    if action == "sentinel-failover" and (redis is None or redis.mode != "sentinel"):
        return ("sentinel-failover needs the runner's own Sentinel group: "
                "run with --redis-mode sentinel")
    if action == "rolling-upgrade" and not ctl_has_command("upgrade"):
        return ("rolling-upgrade needs the cluster rolling upgrade (`polycorn-ctl upgrade`), "
                "which this build of polycorn.ha does not have yet")
    if not cluster.local:
        if action == "join-node":
            return "join-node: attach mode does not start nodes"
        if action == "kill-worker":
            return "kill-worker: attach mode cannot tell a worker from the cluster agent"
        if action == "usr2":
            return "usr2: attach mode does not know the node's pid file"
        if action == "kill-node" and fault.duration:
            return "kill-node with a duration: attach mode cannot start the node again"
        if fault.node and fault.node not in NODE_ALIASES and fault.node not in cluster.nodes:
            return f"no live node {fault.node!r} in the registry"
        foreign = [n.node_id for n in cluster.nodes.values() if not cluster.same_host(n)]
        if foreign and action not in ("rolling-upgrade",):
            return f"nodes {', '.join(foreign)} run on another host: signals cannot reach them"
    return None


class FaultContext:
    """What the actions act on: the cluster, the process tracker, the run directory."""

    def __init__(self, cluster: Any, tracker: ProcessTracker, run_dir: Path,
                 rng: random.Random, front: Any = None) -> None:
        self.cluster = cluster
        self.tracker = tracker
        self.run_dir = run_dir
        self.rng = rng
        self.front = front

    def lease(self) -> tuple[str | None, int | None]:
        """The registry's leader and epoch now ((None, None) when Redis cannot say)."""
        status = self.cluster.status_or_none() if hasattr(self.cluster, "status_or_none") \
            else self.cluster.status()
        status = status or {}
        return status.get("leader"), status.get("epoch")

    def leader(self) -> str:
        leader = self.cluster.status().get("leader")
        if not leader:
            raise RuntimeError("the registry names no leader right now")
        return str(leader)

    def resolve(self, target: str) -> Any:
        if not self.cluster.local:
            self.cluster.refresh()
        if target == "leader":
            return self.cluster.nodes[self.leader()]
        if target == "follower":
            status = self.cluster.status()
            leader = status.get("leader")
            if not leader:
                raise RuntimeError("the registry names no leader right now")
            # A live follower: after a kill-node the dead node is still in the cluster's
            # list, and a fault on it would prove nothing.
            alive = {str(n.get("node_id")) for n in status.get("nodes", []) if n.get("alive")}
            followers = sorted(n for n in self.cluster.nodes if n != leader and n in alive)
            if not followers:
                raise RuntimeError("no live follower: the leader is the only live node")
            return self.cluster.nodes[followers[0]]
        return self.cluster.nodes[target]


def _kill(rec: FaultRecord, pids: list[int], what: str) -> None:
    if not pids:
        raise RuntimeError(f"no live {what} to kill")
    rec.pids = signal_pids(pids, signal.SIGKILL)
    rec.started = time.time()  # the kill itself, after any registry read that preceded it
    rec.detail = f"SIGKILL {what} {', '.join(map(str, rec.pids))}"


def kill_worker(ctx: FaultContext, rec: FaultRecord, node: Any) -> Steps:
    workers = node.workers()
    _kill(rec, [ctx.rng.choice(workers)] if workers else [], "worker")
    yield from ()


def kill_master(ctx: FaultContext, rec: FaultRecord, node: Any) -> Steps:
    masters = node.masters()
    index = rec.fault.master if rec.fault.master is not None else min(masters, default=0)
    _kill(rec, [masters[index]] if index in masters else [], f"master {index}")
    yield from ()


def follow_election(ctx: FaultContext, rec: FaultRecord, old: tuple[str | None, int | None]
                    ) -> Steps:
    """After a fault on the leader: wait for a leader under a new epoch and record who,
    which epoch and how long the election took (measured to a registry read, which
    takes ~0.1-0.3 s here: the figure is an upper bound)."""
    if rec.started is None:
        return
    deadline = time.time() + ELECTION_WAIT
    while time.time() < deadline:
        leader, epoch = ctx.lease()
        if leader and epoch != old[1]:
            rec.facts.update(old_leader=old[0], old_epoch=old[1], new_leader=leader,
                             new_epoch=epoch, election_s=round(time.time() - rec.started, 2))
            return
        yield ELECTION_POLL
    rec.facts.update(old_leader=old[0], old_epoch=old[1], new_leader=old[0], new_epoch=old[1],
                     election_s=None)


def kill_node(ctx: FaultContext, rec: FaultRecord, node: Any) -> Steps:
    old = ctx.lease() if ctx.cluster.redis_url else (None, None)
    pids = node.pids()
    # A host that vanishes tells no one: stop every process first, so that none of
    # them (the agent seeing its master's socket close, say) resigns or deregisters
    # in the moment between two of the kills.
    signal_pids(pids, signal.SIGSTOP)
    _kill(rec, pids, "node processes")
    rec.facts["whole_node"] = True
    if old[0] == node.node_id:  # the leader's whole node: agent, masters, workers
        yield from follow_election(ctx, rec, old)
    if rec.fault.duration:
        yield rec.fault.duration
        node.start()
        rec.detail += f"; started again after {rec.fault.duration:g}s"
        # Out until it serves again, as a joining node is (chaos --random 8: the node
        # booted for 5 s after its restart while the others were drained and slowed).
        yield from _wait_registered_ready(ctx, rec, node, "restarted")


def kill_leader(ctx: FaultContext, rec: FaultRecord, _node: Any) -> Steps:
    status = ctx.cluster.status()
    leader = status.get("leader")
    record = next((n for n in status.get("nodes", []) if n.get("node_id") == leader), None)
    if record is None:
        raise RuntimeError("the registry names no leader right now")
    rec.node = str(leader)
    pid = int(record["pid"])
    node = ctx.cluster.nodes.get(rec.node)
    if ctx.cluster.local and (node is None or pid not in node.masters().values()):
        # The registry may lag a restart: never kill a pid no status file vouches for.
        raise RuntimeError(f"the registry names pid {pid} for leader {leader}, which is not "
                           "one of its live masters")
    _kill(rec, [pid], f"leader {leader}'s registered master")
    # With a peer master the agent may live on and keep the lease: then the report says
    # the leader stayed, after ELECTION_WAIT.
    yield from follow_election(ctx, rec, (str(leader), status.get("epoch")))


def pause_node(ctx: FaultContext, rec: FaultRecord, node: Any) -> Steps:
    pids = node.pids()
    if not pids:
        raise RuntimeError(f"no live process of {node.node_id} to pause")
    rec.pids = signal_pids(pids, signal.SIGSTOP)
    rec.detail = f"SIGSTOP {len(rec.pids)} processes"
    try:
        yield rec.fault.duration or 0.0
    finally:  # also when the run is cut short: a stopped node must not stay stopped
        signal_pids(rec.pids, signal.SIGCONT)
        rec.ended = time.time()
    rec.detail += f"; SIGCONT after {rec.fault.duration:g}s"


def signal_masters(sig: signal.Signals):
    def action(ctx: FaultContext, rec: FaultRecord, node: Any) -> Steps:
        rec.pids = signal_pids(sorted(node.masters().values()), sig)
        if not rec.pids:
            raise RuntimeError("no live master")
        rec.detail = f"{sig.name} to master(s) {', '.join(map(str, rec.pids))}"
        yield from ()
    return action


def usr2(ctx: FaultContext, rec: FaultRecord, node: Any) -> Steps:
    """`polycorn --upgrade PIDFILE`: each master re-executes, health-gated, in turn."""
    log_path = ctx.run_dir / f"upgrade-{node.node_id}-{int(time.time())}.log"
    yield from _run_command(ctx, rec, node.upgrade_argv(), log_path, "polycorn --upgrade",
                            f" {node.pidfile.name}", tail=3)


def _run_command(ctx: FaultContext, rec: FaultRecord, argv: list[str], log_path: Path,
                 what: str, args: str = "", tail: int = 2) -> Steps:
    """Run a command under the tracker, polling until it exits; the fault ends with it and
    fails with its exit status and the last `tail` lines of its output."""
    proc = ctx.tracker.spawn(argv, log_path=log_path, cwd=ctx.run_dir)
    rec.pids = [proc.pid]
    rec.detail = f"{what}{args} (pid {proc.pid})"
    while proc.poll() is None:
        yield UPGRADE_POLL
    rec.ended = time.time()
    output = log_path.read_text(errors="replace").strip().splitlines()
    rec.detail = f"{what} exit {proc.returncode}: {' | '.join(output[-tail:])}"
    if proc.returncode != 0:
        raise RuntimeError(rec.detail)


def stop_redis(ctx: FaultContext, rec: FaultRecord, _node: Any) -> Steps:
    server = ctx.cluster.redis.current_primary()
    server.crash()
    rec.pids = [server.pid]
    rec.detail = f"SIGKILL redis-server port {server.port}"
    yield rec.fault.duration or 0.0
    server.start()
    rec.ended = time.time()
    rec.detail += f"; started again after {rec.fault.duration:g}s"


def sentinel_failover(ctx: FaultContext, rec: FaultRecord, _node: Any) -> Steps:
    rec.detail = ctx.cluster.redis.failover()
    yield from ()


def rolling_upgrade(ctx: FaultContext, rec: FaultRecord, _node: Any) -> Steps:
    # --wait: the command follows the rollout and exits 0 only when every node is done.
    argv = [sys.executable, "-m", "polycorn.ha.ctl", "upgrade", "--wait", "--cluster",
            ctx.cluster.name, "--redis", ctx.cluster.redis_url]
    log_path = ctx.run_dir / f"rolling-upgrade-{int(time.time())}.log"
    yield from _run_command(ctx, rec, argv, log_path, "polycorn-ctl upgrade")


def drain_node(ctx: FaultContext, rec: FaultRecord, node: Any) -> Steps:
    """`polycorn-ctl drain NODE` (it waits until the node reports draining), then
    `polycorn-ctl undrain NODE` after the fault's duration: the node keeps serving. The
    undrain runs even when the drain failed (Redis down meanwhile: the request may be
    recorded all the same), and is retried until the node is back or UNDRAIN_TRIES."""
    def ctl(verb: str) -> list[str]:
        return [sys.executable, "-m", "polycorn.ha.ctl", verb, node.node_id, "--cluster",
                ctx.cluster.name, "--redis", ctx.cluster.redis_url]
    stamp = int(time.time())
    try:
        yield from _run_command(ctx, rec, ctl("drain"), ctx.run_dir / f"drain-{node.node_id}-"
                                f"{stamp}.log", "polycorn-ctl drain", f" {node.node_id}")
        drained = rec.detail
        yield rec.fault.duration or 0.0
    except GeneratorExit:  # the run is cut short: undo at once, without waiting
        subprocess.run([*ctl("undrain"), "--no-wait"], capture_output=True, timeout=30)
        raise
    except RuntimeError as exc:
        drained = f"drain failed ({exc})"
    for attempt in range(UNDRAIN_TRIES):
        try:
            yield from _run_command(ctx, rec, ctl("undrain"), ctx.run_dir / f"undrain-"
                                    f"{node.node_id}-{stamp}-{attempt}.log",
                                    "polycorn-ctl undrain", f" {node.node_id}")
            break
        except RuntimeError:
            if attempt == UNDRAIN_TRIES - 1:
                raise
            yield UPGRADE_POLL
    rec.detail = f"{drained}; {rec.detail}"


LOSS_PERCENT = 20


def _redis_hosts(ctx: FaultContext) -> list[str]:
    redis = ctx.cluster.redis
    servers = redis.group.servers if redis.group else [redis.single]
    return [s.host for s in servers] + redis.sentinel_hosts()


def _network_fault(ctx: FaultContext, rec: FaultRecord, host: str, apply: Any,
                   what: str) -> Steps:
    """Apply an nftables table in the host's namespace for the fault's duration."""
    network = ctx.cluster.network
    name = f"f{len(rec.fault.label)}x{int(time.time() * 1000) % 10**9}"
    apply(network, host, name)
    rec.started = time.time()
    rec.detail = what
    try:
        yield rec.fault.duration or 0.0
    finally:  # also when the run is cut short
        network.heal(host, name)
        rec.ended = time.time()
    rec.detail += f"; healed after {rec.fault.duration:g}s"


def cut_redis(ctx: FaultContext, rec: FaultRecord, node: Any) -> Steps:
    peers = _redis_hosts(ctx)
    oneway = rec.fault.action == "cut-redis-oneway"
    yield from _network_fault(
        ctx, rec, node.node_id,
        lambda net, host, name: net.cut(host, name, peers, inbound=not oneway),
        f"{'dropping what it sends to' if oneway else 'cut from'} {', '.join(peers)}")


def cut_front(ctx: FaultContext, rec: FaultRecord, node: Any) -> Steps:
    if ctx.front is None:
        raise RuntimeError("cut-front needs the front: run with --front haproxy")
    peers = [ctx.front.host]
    yield from _network_fault(ctx, rec, node.node_id,
                              lambda net, host, name: net.cut(host, name, peers),
                              f"cut from the front {peers[0]}")


def lossy_node(ctx: FaultContext, rec: FaultRecord, node: Any) -> Steps:
    yield from _network_fault(ctx, rec, node.node_id,
                              lambda net, host, name: net.lose(host, name, LOSS_PERCENT),
                              f"dropping {LOSS_PERCENT}% of its packets each way")


def split_primary(ctx: FaultContext, rec: FaultRecord, _node: Any) -> Steps:
    """The split-brain case: the Redis primary keeps half the nodes but loses the Sentinels
    (who promote the replica for the other half) until the cut heals."""
    redis = ctx.cluster.redis
    primary = redis.current_primary()
    ids = sorted(ctx.cluster.nodes)
    with_primary = ids[:max(1, len(ids) // 2)]
    cut_off = [n for n in ids if n not in with_primary]
    peers = redis.sentinel_hosts() + [ctx.cluster.nodes[n].host for n in cut_off]
    rec.facts.update(primary_port=primary.port, nodes_with_primary=with_primary,
                     nodes_cut_off=cut_off)
    yield from _network_fault(
        ctx, rec, redis.role_of(primary),
        lambda net, host, name: net.cut(host, name, peers),
        f"primary port {primary.port} cut from the Sentinels and {', '.join(cut_off)}; "
        f"{', '.join(with_primary)} still reach it")


def join_node(ctx: FaultContext, rec: FaultRecord, _node: Any) -> Steps:
    """Start one more node; record when it was ready and, behind a front, when HAProxy
    sent it its first request."""
    node = ctx.cluster.add_node()
    rec.node = node.node_id
    rec.detail = f"started {node.node_id} on {node.url}"
    yield from _wait_registered_ready(ctx, rec, node, "started")
    if ctx.front is None:
        rec.detail += " (no front: Locust's node list is fixed, the new node gets no load)"


def _wait_registered_ready(ctx: FaultContext, rec: FaultRecord, node: Any, how: str) -> Steps:
    """Until the node just started is ready in the registry; the fault ends then."""
    started = time.time()
    deadline = started + JOIN_READY_TIMEOUT
    while not _registered_ready(ctx, node):
        if time.time() > deadline:
            raise RuntimeError(f"{node.node_id} not ready {JOIN_READY_TIMEOUT:g}s after it "
                               f"was {how}; see {node.log_path}")
        yield UPGRADE_POLL
    ready = time.time()
    rec.facts[f"ready_s_after_{'start' if how == 'started' else 'restart'}"] = round(
        ready - started, 2)
    rec.facts["ready_at"] = ready
    rec.ended = ready
    rec.detail += f"; ready after {ready - started:.1f}s"


def _registered_ready(ctx: FaultContext, node: Any) -> bool:
    if not node.ready():
        return False
    if not ctx.cluster.redis_url:
        return True
    status = ctx.cluster.status_or_none() or {}
    return any(n.get("node_id") == node.node_id and n.get("alive") and n.get("state") == "ready"
               for n in status.get("nodes", []))


ACTIONS = {
    "kill-worker": kill_worker, "kill-master": kill_master, "kill-node": kill_node,
    "kill-leader": kill_leader, "pause-node": pause_node, "usr2": usr2,
    "hup": signal_masters(signal.SIGHUP), "stop-redis": stop_redis,
    "sentinel-failover": sentinel_failover, "rolling-upgrade": rolling_upgrade,
    "join-node": join_node, "drain-node": drain_node, "cut-redis": cut_redis,
    "cut-redis-oneway": cut_redis, "cut-front": cut_front, "lossy-node": lossy_node,
    "split-primary": split_primary, "slow-redis": slow_path, "slow-front": slow_path,
}


def begin(ctx: FaultContext, rec: FaultRecord) -> Steps:
    """Resolve the target node and start the action (the first step runs at once)."""
    node = None
    if rec.fault.node:
        node = ctx.resolve(rec.fault.node)
        rec.node = node.node_id
    rec.started = time.time()
    rec.outcome = "running"
    return ACTIONS[rec.fault.action](ctx, rec, node)

