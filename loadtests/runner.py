"""The chaos runner: cluster up, Locust on, faults on their timeline, report out, all down.

Everything it starts runs in sessions of its own and is tracked by pid; the
`finally` that kills it all also runs on Ctrl-C and SIGTERM (turned into
KeyboardInterrupt). Faults run on one thread from a heap of due steps, so a
fault that lasts (a pause, Redis down, an upgrade) never delays the next one.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from polycorn.ha import history
from polycorn.ha.process_tracker import ProcessTracker, tagged_pids
from polycorn.ha.redis_launcher import RedisLaunchError
from polycorn.ha.timing import Timing

from loadtests import checker, faults, latency_faults, netns, random_schedule
from loadtests.cluster import AttachedCluster, ClusterError, LocalCluster, free_ports
from loadtests.faults import FaultContext, FaultRecord, ctl_has_command
from loadtests.front import FrontError, HaproxyFront, front_facts
from loadtests.latency_proxy import ProxyError
from loadtests.locust_run import LocustError, LocustOutput, LocustRun
from loadtests.report import build, summary_text, verdict
from loadtests.scenario import (
    ACTIONS,
    FRONTS,
    NETNS_ACTIONS,
    SCENARIOS,
    Scenario,
    ScenarioError,
    check_fits,
    load_scenario,
    parse_cluster,
    parse_fault_flag,
)
from loadtests.targets import TargetError

EXIT_OK, EXIT_LOST, EXIT_USAGE, EXIT_ENVIRONMENT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
SWEEP_EVERY = 1.0  # seconds between two looks for new processes of the run
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.chaos",
        description="Run Locust against a Polycorn cluster while injecting faults on a "
                    "timeline; report failed requests per fault, recovery, and a plot.",
        epilog="exit codes: 0 every fault within its allowance, 1 requests lost beyond it "
               "(or a fault could not be carried out), 2 usage, 3 environment "
               "(cluster or Locust would not start), 130 interrupted")
    p.add_argument("--scenario", type=Path, metavar="FILE",
                   help=f"TOML, JSON or YAML scenario (e.g. {SCENARIOS / 'standard.toml'})")
    p.add_argument("--fault", action="append", default=[], metavar="AT:ACTION[:NODE][:k=v]",
                   help="add a fault, e.g. 20:kill-master:n2:master=1 or 30:pause-node:n3:"
                        "duration=2; NODE is an id, leader or follower")
    p.add_argument("--list-actions", action="store_true", help="list the fault actions")
    load = p.add_argument_group("load (override the scenario)")
    load.add_argument("--duration", type=float, help="seconds of load")
    load.add_argument("--users", type=int, help="Locust users")
    load.add_argument("--rate", type=float, help="requests/s per user (0: unpaced)")
    load.add_argument("--front", choices=FRONTS,
                      help="haproxy: send the load through a real HAProxy that the registry "
                           "drives (polycorn-ctl haproxy config/sync), as in production; none: "
                           "Locust spreads it over the nodes itself")
    shape = p.add_argument_group("local cluster (override the scenario's [cluster])")
    shape.add_argument("--nodes", type=int)
    shape.add_argument("--masters", type=int, help="masters per node (2+: hand-off)")
    shape.add_argument("--workers", type=int, help="workers per node")
    shape.add_argument("--worker-class", choices=["sync", "thread"])
    shape.add_argument("--threads", type=int)
    shape.add_argument("--app", help="WSGI app spec (default hello:application)")
    shape.add_argument("--app-dir", help="directory the app is imported from")
    shape.add_argument("--redis-mode", choices=["single", "sentinel", "none"], default=None,
                       help="the runner's own Redis: one server (the default), a Sentinel "
                            "group (the default with --random), or none (stand-alone nodes)")
    shape.add_argument("--redis-min-replicas", type=int, default=0, metavar="N",
                       help="Sentinel group: min-replicas-to-write N (max lag 2 s) on both data "
                            "servers, so a primary cut off from its replica refuses writes")
    attach = p.add_argument_group("attach to a running cluster instead")
    attach.add_argument("--attach", action="store_true",
                        help="use the live nodes of --cluster in --redis; start nothing")
    attach.add_argument("--cluster", default="default", help="cluster name (with --attach)")
    attach.add_argument("--redis", help="Redis URL of the cluster (with --attach)")
    p.add_argument("--out", type=Path, help="report directory (default reports/chaos-TIME)")
    p.add_argument("--seed", type=int, default=None, help="seed for picking a worker to kill")
    p.add_argument("--random", type=int, default=None, metavar="SEED",
                   help="draw overlapping faults from the whole list with this seed (the "
                        "schedule replays; the interleavings of processes do not); faults "
                        "that cannot run at their moment are skipped, and the checker's "
                        "invariants decide the run")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib)")
    p.add_argument("--netns", action="store_true",
                   help="give every node, Redis server, Sentinel and the front a network "
                        "namespace of its own (root only), so partition faults can cut links "
                        "(cut-redis, cut-redis-oneway, cut-front, lossy-node, split-primary)")
    return p


def scenario_from(args: argparse.Namespace) -> Scenario:
    scenario = load_scenario(args.scenario) if args.scenario else Scenario()
    overrides = {k: getattr(args, k) for k in ("duration", "users", "rate", "front")
                 if getattr(args, k) is not None}
    shape = {k: getattr(args, k) for k in ("nodes", "masters", "workers", "worker_class",
                                           "threads", "app", "app_dir")
             if getattr(args, k) is not None}
    if overrides or shape:
        cluster = parse_cluster({**vars(scenario.cluster), **shape})
        scenario = replace(scenario, cluster=cluster, **overrides)
    if args.redis_mode is None:
        args.redis_mode = "sentinel" if args.random is not None else "single"
    if args.random is not None:
        if args.fault or args.attach:
            raise ScenarioError("--random draws the faults itself: no --fault, no --attach")
        unavailable = set() if ctl_has_command("upgrade") else {"rolling-upgrade"}
        if not args.netns:
            unavailable |= NETNS_ACTIONS
            unavailable.add("slow-front")
            if args.redis_mode != "single":  # the Sentinels would bypass a node's proxy
                unavailable.add("slow-redis")
        if (args.front or scenario.front) == "none":
            unavailable |= {"cut-front", "slow-front"}
        drawn = random_schedule.draw(args.random, scenario.duration, scenario.cluster,
                                     redis_mode=args.redis_mode,
                                     unavailable=frozenset(unavailable))
        scenario = replace(scenario, name=f"random-{args.random}", faults=drawn)
    scenario = scenario.with_faults([parse_fault_flag(f) for f in args.fault])
    if scenario.front != "none" and (args.attach or args.redis_mode == "none"):
        raise ScenarioError("a front follows the registry of a cluster the runner starts: "
                            "it needs the runner's own Redis and no --attach")
    if not args.attach:
        check_fits(scenario)
    elif any(f.at >= scenario.duration for f in scenario.faults):
        raise ScenarioError("every fault must happen within the load's duration")
    return scenario


class Timeline:
    """Runs the faults' steps when they are due, while Locust runs."""

    def __init__(self, ctx: FaultContext, tracker: ProcessTracker, say,
                 tolerant: bool = False) -> None:
        # tolerant (random schedules): a fault that cannot run at its moment (its node
        # is down, no leader yet) or that the load cuts short is "skipped", not a
        # failed run; the checker's invariants judge the cluster.
        self.tolerant = tolerant
        self.ctx = ctx
        self.tracker = tracker
        self.say = say
        self.pending: list[tuple[float, int, FaultRecord, Any]] = []
        self._seq = 0

    def add(self, due: float, rec: FaultRecord, steps: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self.pending, (due, self._seq, rec, steps))

    def run(self, t0: float, locust: LocustRun) -> None:
        try:
            while self.pending:
                due, _, rec, steps = heapq.heappop(self.pending)
                self._sleep_until(due, locust)
                if not locust.running():
                    self.say(f"Locust ended before {rec.fault.label} at {rec.fault.at:g}s "
                             f"could {'finish' if steps else 'start'}")
                    rec.outcome = "skipped" if self.tolerant else "failed"
                    rec.detail = "the load ended before it finished"
                    if steps is not None:
                        steps.close()
                    continue
                self._step(t0, rec, steps)
        finally:
            for *_, steps in self.pending:  # cut short: let each fault undo itself
                if steps is not None:
                    steps.close()

    def _sleep_until(self, due: float, locust: LocustRun) -> None:
        while locust.running():
            left = due - time.time()
            if left <= 0:
                return
            time.sleep(min(left, SWEEP_EVERY))
            self.tracker.sweep()  # remember processes that the faults make orphans of

    def _step(self, t0: float, rec: FaultRecord, steps: Any) -> None:
        first = steps is None
        try:
            if first:
                steps = faults.begin(self.ctx, rec)
            delay = next(steps)
        except StopIteration:
            rec.outcome = "done"
        except Exception as exc:  # a fault that cannot be carried out is reported, not fatal
            rec.outcome = "skipped" if self.tolerant else "failed"
            rec.detail = f"{type(exc).__name__}: {exc}"
        else:
            self.add(time.time() + delay, rec, steps)
            if not first:
                return
        _record_fault(rec, first)
        # One line when a fault starts, one more when a lasting one ends.
        t = (rec.started if first and rec.started else time.time()) - t0
        state = "started" if rec.outcome == "running" else rec.outcome
        self.say(f"  t={t:6.1f}s  {rec.fault.label:<24} {rec.node or '':<4} {state}: "
                 f"{rec.detail}")


def _record_fault(rec: FaultRecord, first: bool) -> None:
    """The fault in the runner's history, on the monotonic clock (its Unix times moved
    over): one line when it started, one when it ended (at once for an instant one)."""
    recorder = history.current()
    shift = history.now() - time.time()
    ident = id(rec)
    if first and rec.started is not None:
        takes_out = (rec.fault.action in checker.TAKES_NODE_OUT
                     or latency_faults.takes_node_out(rec.fault))
        recorder.record("fault", t=rec.started + shift, phase="start", id=ident,
                        label=rec.fault.label, action=rec.fault.action, node=rec.node,
                        allowance=rec.allowed_failures, takes_out=takes_out)
    if rec.outcome != "running":
        end = rec.ended or rec.started or time.time()
        recorder.record("fault", t=end + shift, phase="end", id=ident, outcome=rec.outcome)


def open_fds() -> set[int]:
    try:
        return {int(n) for n in os.listdir("/proc/self/fd")}
    except OSError:
        return set()


def describe_fds(fds: set[int]) -> list[str]:
    """'fd -> what it is' (a file, socket:[inode], anon_inode:[eventpoll]...): the
    evidence names the leak, not only its number."""
    described = []
    for fd in sorted(fds):
        try:
            described.append(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            continue  # closed meanwhile (listdir's own fd among them)
    return described


def run(args: argparse.Namespace, say=print) -> int:
    try:
        scenario = scenario_from(args)
        if args.random is not None:
            say(f"random schedule {args.random}: {random_schedule.describe(scenario.faults)}")
    except ScenarioError as exc:
        say(f"chaos: error: {exc}")
        return EXIT_USAGE
    if args.attach and not args.redis:
        say("chaos: error: --attach needs --redis URL (and --cluster NAME)")
        return EXIT_USAGE
    out = (args.out or Path("reports") / time.strftime("chaos-%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "run"
    if len(str(run_dir / "n00.sock")) > MAX_SOCKET_PATH:  # hand-off sockets live there
        run_dir = Path(tempfile.mkdtemp(prefix="polycorn-chaos-"))
    run_dir.mkdir(exist_ok=True)
    tracker = ProcessTracker(run_dir)
    network = None
    if args.netns:
        reason = netns.unavailable_reason()
        if reason:
            say(f"chaos: error: --netns: {reason}")
            return EXIT_ENVIRONMENT
        if args.attach:
            say("chaos: error: --netns starts its own cluster: no --attach")
            return EXIT_USAGE
    fds_before = open_fds()
    # Every process of the run (nodes' agents, Locust, this runner) appends its own
    # history there; the checker reads it after the cleanup.
    history_dir = out / "history"
    # A run's history only: an earlier run into the same --out (`make demo` twice) left
    # its files there, and the checker judged both runs' epochs as one (fencing broken).
    shutil.rmtree(history_dir, ignore_errors=True)
    history_dir.mkdir()
    os.environ[history.ENV] = str(history_dir)
    recorder = history.open_from_env("runner")
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    code = EXIT_INTERRUPTED
    try:
        if args.netns:
            # The runner itself becomes host "ctl" before any thread starts: its Redis
            # calls, Locust and the front's sync run there, every address is a host's.
            network = netns.Network((tracker.tag or "run")[:6]).start()
            network.add_host("ctl")
            network.enter("ctl")
            say(f"network: namespaces {network.prefix}* on a bridge, {netns.SUBNET}.0/24")
        code = _run(args, scenario, out, run_dir, tracker, say, network)
    except KeyboardInterrupt:
        say("chaos: interrupted; stopping everything this run started")
        return EXIT_INTERRUPTED
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        tracker.kill_all()
        if network is not None:  # after the processes: a namespace lives while one is in it
            network.close()
        recorder.close()
        os.environ.pop(history.ENV, None)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code in (EXIT_OK, EXIT_LOST) and not args.attach and (out / "report.json").exists():
        leftovers = {"processes": sorted(ProcessTracker(run_dir).sweep()),
                     "tagged processes": tagged_pids(tracker.tag or "") if tracker.tag else [],
                     "fds": describe_fds(open_fds() - fds_before)}
        if network is not None:
            leftovers["namespaces"] = netns.namespaces(network.prefix)
        code = _judge(out, history_dir, leftovers, code, say)
    return code


def _judge(out: Path, history_dir: Path, leftovers: dict[str, list[Any]], code: int,
           say) -> int:
    """Run the checker over the history and add its invariants to the report."""
    timing = Timing()
    records = checker.load_history(history_dir)
    invariants = checker.check(records, node_ttl=timing.node_ttl, lease=timing.lease,
                               leftovers=leftovers)
    path = out / "report.json"
    report = json.loads(path.read_text())
    report["invariants"] = [i.as_json() for i in invariants]
    dual_s, dual = checker.dual_leadership(records, timing.renew)
    report["split_brain"] = {"two_leaders_s": dual_s, "evidence": dual}
    broken = [i for i in invariants if not i.held]
    if broken:
        report["verdict"]["ok"] = False
        report["verdict"]["problems"] += [f"invariant {i.name}: {i.evidence}" for i in broken]
    path.write_text(json.dumps(report, indent=1))
    lines = ["", "invariants (history in " + str(history_dir) + "):"]
    lines += [f"  {'held  ' if i.held else 'BROKEN'} {i.name}: {i.evidence}" for i in invariants]
    lines.append(f"  two leaders on two Redis primaries for {dual_s:g} s: {dual}")
    with (out / "summary.txt").open("a") as summary:
        summary.write("\n".join(lines) + "\n")
    for line in lines:
        say(line)
    return EXIT_LOST if broken else code


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _run(args: argparse.Namespace, scenario: Scenario, out: Path, run_dir: Path,
         tracker: ProcessTracker, say, network: Any = None) -> int:
    shape = None if args.attach else scenario.cluster
    if args.attach:
        cluster: Any = AttachedCluster(args.cluster, args.redis)
        say(f"attaching to cluster {args.cluster!r} at {args.redis}")
    else:
        cluster = LocalCluster(scenario.cluster, run_dir, tracker, redis_mode=args.redis_mode,
                               network=network, min_replicas=args.redis_min_replicas,
                               slow_paths=any(f.action == "slow-redis"
                                              for f in scenario.faults))
        say(f"starting {scenario.cluster.nodes} nodes x {scenario.cluster.masters} masters of "
            f"{scenario.cluster.app} in {run_dir}")
    try:
        cluster.start(say)
    except (ClusterError, RedisLaunchError, TargetError, OSError, ProxyError) as exc:
        say(f"chaos: error: the cluster did not start: {exc}")
        return EXIT_ENVIRONMENT
    front = None
    if scenario.front == "haproxy":
        front = HaproxyFront(tracker, run_dir, cluster.name, cluster.redis_url,
                             free_ports(1)[0], network)
        try:
            if network is not None and any(f.action == "slow-front" for f in scenario.faults):
                # Before HAProxy dials any node: every connection it makes is proxied.
                latency_faults.start_front_paths(front, cluster, run_dir, tracker, network)
            front.start(len(cluster.nodes), say)
        except (FrontError, OSError, subprocess.SubprocessError, ProxyError) as exc:
            say(f"chaos: error: the front did not start: {exc}")
            return EXIT_ENVIRONMENT
    records = [FaultRecord(f, allowed_failures=faults.allowed_failures(f, shape, bool(front)))
               for f in scenario.faults]
    for rec in records:
        reason = faults.unavailable_reason(rec.fault, cluster)
        if reason:
            rec.outcome, rec.detail = "unavailable", reason
            say(f"  unavailable: {rec.fault.label} at {rec.fault.at:g}s: {reason}")
    urls = [front.url] if front else [n.url for n in cluster.nodes.values()]
    say(f"load: {scenario.users} users x {scenario.rate:g} req/s for {scenario.duration:g}s "
        f"over {', '.join(urls)}")
    try:
        locust = LocustRun(scenario, urls, out, tracker)
        t0 = locust.wait_started()
        ctx = FaultContext(cluster, tracker, run_dir, random.Random(args.seed), front)
        timeline = Timeline(ctx, tracker, say, tolerant=args.random is not None)
        for rec in records:
            if rec.outcome == "pending":
                timeline.add(t0 + rec.fault.at, rec)
        timeline.run(t0, locust)
        output = locust.wait()
    except LocustError as exc:
        say(f"chaos: error: {exc}")
        return EXIT_ENVIRONMENT
    if front is not None:
        front.stop_sampling()
        front_facts(front, records, cluster, scenario.offered_rps, output.seconds)
    _latency_facts(records, out / "history")
    for rec in records:  # behind a front a pause's allowance is known only now
        if rec.started is not None:
            history.current().record("allowance", id=id(rec), allowance=rec.allowed_failures)
    _record_final(cluster, t0)
    return _report(args, scenario, cluster, records, output, out, run_dir, say, front)


def _latency_facts(records: list[FaultRecord], history_dir: Path) -> None:
    """What each slow-redis fault cost the cluster, from the history so far."""
    slow = [r for r in records if r.fault.action == "slow-redis" and r.started is not None]
    if not slow:
        return
    lines = checker.load_history(history_dir)
    shift = history.now() - time.time()
    for rec in slow:
        rec.facts.update(latency_faults.history_facts(rec, lines, shift, Timing().node_ttl))


def _record_final(cluster: Any, load_started: float) -> None:
    """Which nodes the runner knows alive at the end (their masters' status files, not
    Redis)."""
    alive = [n.node_id for n in cluster.nodes.values() if cluster.local and n.masters()]
    # Without a registry no agent reports the nodes' workers: the checker then judges
    # capacity by the requests each node answered, found by its address.
    history.current().record(
        "final", alive=alive, nodes=sorted(cluster.nodes),
        registry=cluster.redis_url is not None,
        addresses={n.node_id: urlsplit(n.url).netloc for n in cluster.nodes.values()},
        load_started=load_started + history.now() - time.time())


def _report(args: argparse.Namespace, scenario: Scenario, cluster: Any,
            records: list[FaultRecord], output: LocustOutput, out: Path, run_dir: Path,
            say, front: HaproxyFront | None = None) -> int:
    files = {"report": str(out / "report.json"), "timeline": str(out / "timeline.jsonl"),
             "locust_json": str(out / "locust.json"), "locust_log": str(out / "locust.log"),
             "run_dir": str(run_dir)}
    if not args.no_plot:
        files["plot"] = str(out / "chaos.png")
    info = {"mode": "attached" if args.attach else "local", "name": cluster.name,
            "redis": cluster.redis_url, "nodes": {n.node_id: n.url for n in cluster.nodes.values()},
            "front": None if front is None else {
                "kind": "haproxy", "url": front.url, "config": str(front.config),
                "log": str(front.log_path), "sync_log": str(front.sync_log)}}
    report = build(scenario, records, output, info, files)
    if args.random is not None:
        report["verdict"] = verdict(report, per_fault=False)
    report["schedule"] = {"seed": getattr(args, "random", None),
                          "faults": [{"at": f.at, "action": f.action, "node": f.node,
                                      "duration": f.duration, "master": f.master}
                                     for f in scenario.faults]}
    Path(files["report"]).write_text(json.dumps(report, indent=1))
    if not args.no_plot:
        # Drawn in a child: matplotlib keeps its font files open for the life of the
        # process (its font cache), which the leak check after the run counted as this
        # run's leftovers (`make demo`: fds 4 and 5, two .ttf files).
        drawn = subprocess.run([sys.executable, "-m", "loadtests.plot", files["report"],
                                files["plot"]], cwd=Path(__file__).resolve().parent.parent,
                               capture_output=True, text=True)
        if drawn.returncode != 0:
            lines = (drawn.stderr.strip() or f"exit {drawn.returncode}").splitlines()
            say(f"chaos: the plot was not drawn: {lines[-1]}")
    text = summary_text(report)
    (out / "summary.txt").write_text(text + "\n")
    say("")
    say(text)
    return EXIT_OK if report["verdict"]["ok"] else EXIT_LOST


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_actions:
        for name, spec in ACTIONS.items():
            print(f"{name:<18} {spec.help}")
        return EXIT_OK
    return run(args, say=lambda text: print(text, flush=True))


if __name__ == "__main__":
    sys.exit(main())
