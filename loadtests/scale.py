"""How the cluster layer behaves with many nodes: 10, 50, 200 real agents on one machine.

`python -m loadtests.scale --nodes 10,50,200 --out reports/scale` starts, for each
size, a private redis-server, one host process with the first node alone (it
becomes the leader, so its cycle is timed without its neighbours' CPU), then host
processes of `--per-host` agents each (loadtests/scale_host.py: real agents beside
stand-in masters). Over a steady window it measures the leader's cycle time (and
its parts), Redis commands/s, CPU and memory, and the lag of events from XADD to a
`polycorn-ctl events --follow`-style reader; then it silences one node's heartbeats
and times how long until the leader declares it dead, against the node TTL.
Writes scale.json and table.md in --out; everything started is killed by pid.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polycorn.ha import events as ev
from polycorn.ha.events import Event
from polycorn.ha.keys import ClusterKeys
from polycorn.ha.process_tracker import ProcessTracker
from polycorn.ha.redis_launcher import RedisServer
from polycorn.ha.redis_store import RedisStore

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "scale"
PROBE = "scale_probe"  # the event kind the lag probe writes
PROBE_INTERVAL = 0.1
REPLY_TIMEOUT = 20.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summary_ms(values: list[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds of samples in seconds."""
    return {"count": len(values), "p50": round(percentile(values, 0.50) * 1000, 2),
            "p99": round(percentile(values, 0.99) * 1000, 2),
            "max": round(max(values) * 1000, 2) if values else float("nan")}


class HostProcess:
    """One loadtests.scale_host process, driven by JSON lines on its stdin/stdout."""

    def __init__(self, tracker: ProcessTracker, redis_url: str, nodes: list[str],
                 log_path: Path) -> None:
        self.nodes = nodes
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loadtests.scale_host", "--redis", redis_url,
                 "--cluster", CLUSTER, "--nodes", ",".join(nodes)],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True, text=True)
        tracker.popens.append(self.proc)
        tracker.remember(self.proc.pid)
        self.read()  # {"started": n}: every agent and its channel exist

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], REPLY_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"host {self.proc.pid} ({self.nodes[0]}..) did not answer")
        return json.loads(line)

    def ask(self, cmd: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"cmd": "stop"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


@dataclass
class Probe:
    """Writes a probe event every PROBE_INTERVAL and follows the stream as polycorn-ctl
    events --follow does (XREAD BLOCK): the lag is read time minus write time."""

    writer: RedisStore
    reader: RedisStore
    lags: list[float] = field(default_factory=list)
    dead: dict[str, tuple[float, int]] = field(default_factory=dict)  # node -> (seen, id ms)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        latest = self.reader.latest_events(1)
        self.after = latest[-1].id if latest else "0"
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._write, self._read)]
        for t in self.threads:
            t.start()

    def _write(self) -> None:
        while not self.stop.wait(PROBE_INTERVAL):
            self.writer.emit(Event(PROBE, "probe", 0, "", {"sent": repr(time.time())}))

    def _read(self) -> None:
        while not self.stop.is_set():
            for event in self.reader.read_events(after=self.after, count=500, block_ms=500):
                now = time.time()
                self.after = event.id
                if event.kind == PROBE:
                    self.lags.append(now - float(event.extra["sent"]))
                elif event.kind == ev.NODE_DEAD:
                    self.dead[event.node] = (now, event.time_ms)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(2)


def redis_sample(store: RedisStore) -> dict[str, Any]:
    c = store.client
    stats, cpu, memory = c.info("stats"), c.info("cpu"), c.info("memory")
    return {"t": time.monotonic(), "commands": stats["total_commands_processed"],
            "cpu": cpu["used_cpu_sys"] + cpu["used_cpu_user"],
            "memory": memory["used_memory"], "cmdstats": c.info("commandstats")}


def redis_rates(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    span = after["t"] - before["t"]
    per_command = {}
    for name, st in after["cmdstats"].items():
        calls = st["calls"] - before["cmdstats"].get(name, {}).get("calls", 0)
        if calls:
            per_command[name.removeprefix("cmdstat_")] = round(calls / span, 1)
    return {"cmds_per_s": round((after["commands"] - before["commands"]) / span),
            "cpu_pct": round(100 * (after["cpu"] - before["cpu"]) / span, 1),
            "memory_bytes": after["memory"],
            "per_command": dict(sorted(per_command.items(), key=lambda kv: -kv[1]))}


def run_size(n: int, workdir: Path, *, per_host: int, window: float, cut_off: float = 0.0,
             log=print) -> dict[str, Any]:
    """One cluster of n nodes from a fresh Redis to the last process killed."""
    from polycorn.ha.redis_client import make_client

    from loadtests.scale_host import node_config

    tracker = ProcessTracker()
    hosts: list[HostProcess] = []
    probe = None
    try:
        server = RedisServer(tracker, workdir).start()
        config = node_config(server.url, CLUSTER, "observer")
        store = RedisStore(make_client(config.target, config.timing), CLUSTER)
        keys = ClusterKeys(CLUSTER)
        ids = [f"n{i:03d}" for i in range(n)]
        hosts.append(HostProcess(tracker, server.url, ids[:1], workdir / "host-0.log"))
        _wait(lambda: store.snapshot().lease is not None, 15, "the first node to lead")
        rest = ids[1:]
        for i in range(0, len(rest), per_host):
            hosts.append(HostProcess(tracker, server.url, rest[i:i + per_host],
                                     workdir / f"host-{len(hosts)}.log"))
        _wait(lambda: sum(r.alive for r in store.nodes(3000)[1]) == n, 30,
              f"{n} nodes registered and alive")
        time.sleep(2)  # past the joins: every follower in its steady cycle
        log(f"  {n} nodes up in {len(hosts)} host processes; measuring {window:g}s")
        probe = Probe(store, RedisStore(make_client(config.target, config.timing), CLUSTER))
        probe.start()
        for h in hosts:
            h.ask("reset")
        cpu0 = [h.ask("stats")["cpu"] for h in hosts]
        before = redis_sample(store)
        time.sleep(window)
        after = redis_sample(store)
        stats = [h.ask("stats") for h in hosts]
        lags = list(probe.lags)
        result = _steady(n, hosts, stats, cpu0, before, after, window, lags)
        result["detection"] = _detect(hosts[-1], store, keys, probe, config.timing.node_ttl)
        if cut_off:
            result["cut_off"] = _cut_off(hosts, store, cut_off, config.timing.node_ttl)
        return result
    finally:
        if probe is not None:
            probe.close()
        for h in hosts:
            h.stop()
        tracker.kill_all()


def _steady(n: int, hosts: list[HostProcess], stats: list[dict], cpu0: list[float],
            before: dict, after: dict, window: float, lags: list[float]) -> dict[str, Any]:
    leader = stats[0]
    if leader["leaders"] != ["n000"]:
        raise RuntimeError(f"n000 is not the only leader of its host: {leader['leaders']}")
    others = stats[1:]
    lateness = [x for s in others for x in s["lateness"]]
    cycles = sum(s["cycles"] for s in others)
    cpu = sum(s["cpu"] - c for s, c in zip(others, cpu0[1:], strict=True))
    return {
        "nodes": n, "hosts": len(hosts), "window_s": window,
        "leader_cycle_ms": summary_ms(leader["leader_cycle"]),
        "leader_cycle_cpu_ms": summary_ms(leader["leader_cpu"]),
        "leader_parts_ms": {k: summary_ms(v) for k, v in leader["parts"].items()},
        "redis": redis_rates(before, after),
        "event_lag_ms": summary_ms(lags),
        "follower_hosts": {
            "cycles_per_s": round(cycles / window, 1),
            "cpu_pct": round(100 * cpu / window, 1),  # of one core, all of them together
            "cpu_ms_per_cycle": round(1000 * cpu / max(1, cycles), 3),
            "lateness_ms": summary_ms(lateness)},
    }


def _detect(host: HostProcess, store: RedisStore, keys: ClusterKeys, probe: Probe,
            ttl: float) -> dict[str, Any]:
    """Silence one node's heartbeats; how long until the leader's node_dead event."""
    victim = host.nodes[-1]
    silenced = host.ask("silence", node=victim)["at"]
    last_beat_ms = int(store.client.zscore(keys.members, victim))
    _wait(lambda: victim in probe.dead, ttl * 3 + 10, f"{victim} declared dead")
    seen, event_ms = probe.dead[victim]
    return {"node": victim, "ttl_s": ttl,
            "after_last_heartbeat_s": round((event_ms - last_beat_ms) / 1000, 3),
            "after_silence_s": round(seen - silenced, 3)}


def _cut_off(hosts: list[HostProcess], store: RedisStore, fraction: float,
             ttl: float) -> dict[str, Any]:
    """Silence whole follower hosts at once, at least `fraction` of the nodes (hosts cut
    off from Redis while the leader is not): does the leader's mass-lapse guard hold
    (duties_paused) or declare them dead? Run after _detect: one node is dead already."""
    population = sum(len(h.nodes) for h in hosts) - 1
    cut: list[str] = []
    after = store.latest_events(1)[-1].id
    for host in hosts[1:]:
        if len(cut) >= fraction * population:
            break
        cut += host.ask("silence", node="*")["silenced"]
    time.sleep(ttl * 4)  # past MASS_LAPSE_PATIENCE (3) node TTLs
    seen = store.read_events(after=after, count=10_000)
    dead = [e for e in seen if e.kind == ev.NODE_DEAD]
    return {"silenced": len(set(cut)), "population": population,
            "declared_dead": len({e.node for e in dead} & set(cut)),
            "declarations": len({e.id for e in dead}),
            "paused": [e.reason for e in seen if e.kind == ev.DUTIES_PAUSED]}


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| nodes | leader cycle p50 / p99 ms (CPU p50) | Redis cmds/s | Redis CPU % "
            "| Redis memory | dead after last heartbeat (TTL) | event lag p50 / p99 ms "
            "| followers: cycles/s, CPU % of a core |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lc, cpu = r["leader_cycle_ms"], r["leader_cycle_cpu_ms"]
        d, lag, red, f = r["detection"], r["event_lag_ms"], r["redis"], r["follower_hosts"]
        rows.append(
            f"| {r['nodes']} | {lc['p50']} / {lc['p99']} ({cpu['p50']}) | {red['cmds_per_s']} "
            f"| {red['cpu_pct']} | {red['memory_bytes'] / 1e6:.2f} MB "
            f"| {d['after_last_heartbeat_s']} s ({d['ttl_s']:g} s) | {lag['p50']} / {lag['p99']} "
            f"| {f['cycles_per_s']}, {f['cpu_pct']} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", default="10,50,200", help="cluster sizes, comma-separated")
    p.add_argument("--per-host", type=int, default=50, help="agents per host process")
    p.add_argument("--window", type=float, default=20.0, help="steady seconds measured")
    p.add_argument("--out", default="reports/scale")
    p.add_argument("--cut-off", type=float, default=0.0, metavar="FRACTION",
                   help="at the end, silence whole hosts holding at least this fraction of "
                        "the nodes at once and report what the leader did")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (int(x) for x in args.nodes.split(",")):
        print(f"{n} nodes:", flush=True)
        workdir = out / f"{n}-nodes"  # the host logs stay for reading
        workdir.mkdir(exist_ok=True)
        results.append(run_size(n, workdir, per_host=args.per_host, window=args.window,
                                cut_off=args.cut_off))
        r = results[-1]
        (out / "scale.json").write_text(json.dumps(results, indent=2) + "\n")  # each size kept
        print(f"  leader cycle {r['leader_cycle_ms']}, redis {r['redis']['cmds_per_s']} cmds/s, "
              f"dead after {r['detection']['after_last_heartbeat_s']} s", flush=True)
        if "cut_off" in r:
            print(f"  cut off: {r['cut_off']}", flush=True)
    (out / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
