"""Many real cluster agents in one process, each beside a stand-in master.

The scale harness (loadtests/scale.py) runs a cluster of 200 nodes on a 2-core
machine by hosting many agents per process: each is the real ha.agent.Agent with
its own redis-py client, election, fence, inbox and duties, and each talks over a
real socketpair (the sidecar channel, server/sidecar.py) to a stand-in master that
sends hello and state and answers relayed commands as a master would. Only the
agent's own loop (Agent.run, one process per agent) is replaced: one scheduler here
calls each agent's `cycle()` when its `next_cycle` is due and hands it its channel
messages, which is what Agent.run does for one agent.

Control and results are JSON lines: commands on stdin ({"cmd": "stats"},
{"cmd": "reset"}, {"cmd": "silence", "node": ID}, {"cmd": "stop"}), answers on stdout.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import os
import selectors
import socket
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from polycorn.ha.agent import Agent
from polycorn.ha.redis_client import make_client
from polycorn.ha.redis_store import RedisStore
from polycorn.ha.settings import ClusterConfig, cluster_config
from polycorn.server.sidecar import Channel, ChannelClosed

log = logging.getLogger("polycorn.scale")

WORKERS = 2  # each stand-in master "runs" this many workers (and up to twice as many)
TIMERS = {"cluster_heartbeat": 1.0, "node_ttl": 3.0, "leader_lease": 6.0, "leader_renew": 1.0,
          "leader_step_down": 4.0, "redis_connect_timeout": 0.5, "redis_read_timeout": 1.0,
          "redis_retries": 1}


def node_config(redis_url: str, cluster: str, node_id: str,
                timers: dict[str, float] | None = None) -> ClusterConfig:
    cfg = types.SimpleNamespace(redis=redis_url, cluster=cluster, node_id=node_id,
                                advertise="127.0.0.1:1", release="r1", **{**TIMERS, **(timers or {})})
    config = cluster_config(cfg, environ={})
    assert config is not None
    return config


class StandInMaster:
    """The master's end of one agent's channel: hello, a ready state, and the state a
    set_workers, drain or undrain leads to (what a real master reports)."""

    def __init__(self, channel: Channel, pid: int) -> None:
        self.channel = channel
        self.state = {"type": "state", "state": "ready", "workers": WORKERS,
                      "workers_target": WORKERS, "workers_configured": WORKERS,
                      "max_workers": 2 * WORKERS, "pid": pid, "reason": "stand-in master"}
        self.commands = 0

    def greet(self) -> None:
        self.channel.send({"type": "hello", "pid": self.state["pid"], "node": {
            "bind": ["127.0.0.1:1"], "workers": WORKERS, "max_workers": 2 * WORKERS,
            "proc_name": None, "release": "r1"}})
        self.channel.send(self.state)

    def on_readable(self) -> None:
        for msg in self.channel.receive_ready():
            if msg.get("type") != "command":
                continue
            self.commands += 1
            self.channel.send({"type": "result", "id": msg.get("id"), "ok": True,
                               "reason": f"stand-in master did {msg.get('cmd')}"})
            cmd, n = msg.get("cmd"), msg.get("n")
            if cmd == "set_workers":
                self.state = {**self.state, "workers": n, "workers_target": n}
            elif cmd in ("drain", "undrain"):
                self.state = {**self.state, "state": "draining" if cmd == "drain" else "ready"}
            self.channel.send(self.state)


class Timed:
    """Wall-time samples (seconds) of named parts of the leader's cycle."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def add(self, name: str, seconds: float) -> None:
        self.samples.setdefault(name, []).append(seconds)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - start)
        return timed


class Hosted:
    """One agent and its stand-in master, on the two ends of a socketpair."""

    def __init__(self, config: ClusterConfig, timed: Timed) -> None:
        master_end, agent_end = socket.socketpair()
        master_end.setblocking(False)
        self.node_id = config.node_id
        client = make_client(config.target, config.timing,
                             client_name=f"polycorn-agent-{config.node_id}")
        self.store = RedisStore(client, config.cluster)
        self.agent = Agent(config, Channel(agent_end), self.store)
        self.master = StandInMaster(Channel(master_end), os.getpid())
        self.silenced = False
        # The leader's parts, timed where they are cheap to see: only a leader runs them.
        duties = self.agent.duties
        duties.cycle = timed.wrap("duties", duties.cycle)
        for part in ("capacity", "drain", "rollout"):
            duty = getattr(duties, part)
            duty.cycle = timed.wrap(part, duty.cycle)
        duties.store = _TimedReads(self.store, timed)

    def close(self) -> None:
        self.store.close()
        self.agent.channel.close()
        self.master.channel.close()


class _TimedReads:
    """The duties' view of the store with cluster_state and declare_dead timed."""

    def __init__(self, store: RedisStore, timed: Timed) -> None:
        self._store = store
        self.cluster_state = timed.wrap("cluster_state", store.cluster_state)
        self.declare_dead = timed.wrap("declare_dead", store.declare_dead)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class Host:
    """The scheduler: each agent's cycle when due, its channel messages when they come."""

    def __init__(self, configs: list[ClusterConfig], control: Any = None) -> None:
        self.timed = Timed()
        self.sel = selectors.DefaultSelector()  # epoll: hundreds of fds, past select's 1024
        self.nodes = {c.node_id: Hosted(c, self.timed) for c in configs}
        self.due: list[tuple[float, str]] = []
        self.lateness: list[float] = []  # how late each cycle started (this process' CPU)
        self.leader_cycles: list[float] = []
        self.leader_cpu: list[float] = []  # CPU seconds of the same cycles: the work alone
        self.cycles = 0
        self.stopping = False
        for node in self.nodes.values():
            self.sel.register(node.agent.channel.fileno(), selectors.EVENT_READ, ("agent", node))
            self.sel.register(node.master.channel.fileno(), selectors.EVENT_READ, ("master", node))
            node.master.greet()
            self._schedule(node)
        self.control = control  # a text stream of JSON commands (stdin), or none in-process
        if control is not None:
            self.sel.register(control.fileno(), selectors.EVENT_READ, ("control", None))

    def _schedule(self, node: Hosted) -> None:
        heapq.heappush(self.due, (node.agent.next_cycle, node.node_id))

    def run(self, until: float = float("inf")) -> None:
        """Until a stop command, or the monotonic time `until` (in-process use)."""
        while not self.stopping and time.monotonic() < until:
            timeout = max(0.0, self.due[0][0] - time.monotonic()) if self.due else 1.0
            timeout = min(timeout, max(0.0, until - time.monotonic()))
            for key, _ in self.sel.select(timeout):
                kind, node = key.data
                if kind == "control":
                    self._control()
                elif kind == "master":
                    node.master.on_readable()
                else:
                    self._deliver(node)
            self._run_due()

    def _deliver(self, node: Hosted) -> None:
        before = node.agent.next_cycle
        try:
            raws = node.agent.channel.receive_ready()
        except ChannelClosed:
            return
        for raw in raws:
            node.agent.handle_message(raw)
        if node.agent.next_cycle != before:
            self._schedule(node)

    def _run_due(self) -> None:
        # Only the cycles due when the round began: a host too slow to keep up must still
        # get back to select() and answer its control stream (a late reply would hide the
        # overload that the lateness figures are there to show).
        now = began = time.monotonic()
        while self.due and self.due[0][0] <= began:
            at, node_id = heapq.heappop(self.due)
            node = self.nodes[node_id]
            if node.silenced or at != node.agent.next_cycle:
                continue  # a stale entry: the agent was rescheduled since
            self.lateness.append(max(0.0, now - at))
            agent = node.agent
            was_leader = agent.election.is_leader(now)
            start, cpu = time.perf_counter(), time.process_time()
            agent.cycle()
            spent = time.perf_counter() - start
            self.cycles += 1
            if was_leader or agent.election.is_leader(time.monotonic()):
                self.leader_cycles.append(spent)
                self.leader_cpu.append(time.process_time() - cpu)
            self._schedule(node)
            now = time.monotonic()

    def _control(self) -> None:
        line = self.control.readline()
        if not line:
            self.stopping = True
            return
        msg = json.loads(line)
        cmd = msg.get("cmd")
        if cmd == "stats":
            self._answer(self.stats())
        elif cmd == "reset":
            self.timed.samples.clear()
            self.lateness.clear()
            self.leader_cycles.clear()
            self.leader_cpu.clear()
            self.cycles = 0
            self._answer({"reset": True})
        elif cmd == "silence":
            # Its heartbeats stop as if its host froze: no leave, no deregister.
            # "*" silences every node of this host (a host cut off from Redis).
            names = list(self.nodes) if msg["node"] == "*" else [msg["node"]]
            for name in names:
                self.nodes[name].silenced = True
            self._answer({"silenced": names, "at": time.time()})
        elif cmd == "stop":
            self.stopping = True

    def stats(self) -> dict[str, Any]:
        leaders = [n.node_id for n in self.nodes.values()
                   if n.agent.election.is_leader(time.monotonic())]
        return {"pid": os.getpid(), "nodes": len(self.nodes), "leaders": leaders,
                "cycles": self.cycles, "leader_cycle": self.leader_cycles,
                "leader_cpu": self.leader_cpu,
                "parts": self.timed.samples, "lateness": self.lateness,
                "cpu": sum(os.times()[:2]),
                "commands": sum(n.master.commands for n in self.nodes.values())}

    @staticmethod
    def _answer(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--redis", required=True)
    p.add_argument("--cluster", required=True)
    p.add_argument("--nodes", required=True, help="comma-separated node ids to host")
    p.add_argument("--timing", default="{}", help="JSON overrides of the cluster timers")
    args = p.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s [%(process)d] %(levelname)s %(message)s")
    timers = json.loads(args.timing)
    host = Host([node_config(args.redis, args.cluster, n, timers)
                 for n in args.nodes.split(",") if n], control=sys.stdin)
    Host._answer({"started": len(host.nodes), "pid": os.getpid()})
    try:
        host.run()
    finally:
        host.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
