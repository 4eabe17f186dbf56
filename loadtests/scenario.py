"""Chaos scenarios: the load, the cluster's shape and the fault timeline, from a file or flags.

A scenario is TOML (stdlib), JSON, or YAML (when PyYAML is installed): top-level
`duration`, `users`, `rate`, `paths`, a `[cluster]` table and a list of faults
(`[[fault]]`: `at` seconds after the load started, `action`, and per action
`node`, `duration`, `master`). A `--fault AT:ACTION[:NODE][:key=value,...]` flag
adds one. Everything is checked here, before any process starts.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


class ScenarioError(ValueError):
    """A scenario that cannot run as written (one line saying what to change)."""


@dataclass(frozen=True)
class ActionSpec:
    targets_node: bool  # needs `node` (an id, "leader" or "follower")
    default_duration: float | None  # seconds the fault lasts, for the actions that have one
    help: str


ACTIONS: dict[str, ActionSpec] = {
    "kill-worker": ActionSpec(True, None, "SIGKILL one worker of the node"),
    "kill-master": ActionSpec(True, None, "SIGKILL one master of the node (`master` = index)"),
    "kill-node": ActionSpec(True, None, "SIGKILL every process of the node; with `duration`, "
                                        "start it again after that many seconds"),
    "usr2": ActionSpec(True, None, "health-gated upgrade of the node (polycorn --upgrade)"),
    "hup": ActionSpec(True, None, "SIGHUP (reload) to every master of the node"),
    "kill-leader": ActionSpec(False, None, "SIGKILL the leader's registered master"),
    "pause-node": ActionSpec(True, 3.0, "SIGSTOP every process of the node, SIGCONT after "
                                        "`duration`"),
    "stop-redis": ActionSpec(False, 3.0, "SIGKILL Redis (the Sentinel master), start it again "
                                         "after `duration`"),
    "sentinel-failover": ActionSpec(False, None, "SENTINEL FAILOVER of the cluster's service"),
    "rolling-upgrade": ActionSpec(False, None, "cluster-wide rolling upgrade led by the leader"),
    "join-node": ActionSpec(False, None, "start one more node; behind a front it must get "
                                         "requests within JOIN_SERVES_WITHIN s of ready"),
    "drain-node": ActionSpec(True, 4.0, "polycorn-ctl drain the node (out of rotation, still "
                                        "serving), undrain after `duration`"),
    # Partitions: they need hosts with their own network (--netns, root).
    "cut-redis": ActionSpec(True, 4.0, "--netns: cut the node from Redis and the Sentinels, "
                                       "both ways, for `duration`"),
    "cut-redis-oneway": ActionSpec(True, 4.0, "--netns: drop what the node sends to Redis and "
                                              "the Sentinels (it still receives)"),
    "cut-front": ActionSpec(True, 4.0, "--netns: cut the node from the front (HAProxy), both "
                                       "ways"),
    "lossy-node": ActionSpec(True, 5.0, "--netns: drop 20% of the node's packets at random, "
                                        "each way"),
    "split-primary": ActionSpec(False, 6.0, "--netns, Sentinel: cut the Redis primary from the "
                                            "Sentinels and from half the nodes (split brain)"),
    # Latency: the node reaches Redis through a latency proxy from the start (latency_faults.py).
    "slow-redis": ActionSpec(True, 5.0, "delay the node's traffic with Redis and the Sentinels "
                                        "by `delay` ms (default 200; + up to `jitter` ms) each "
                                        "way, for `duration`; with Sentinel it needs --netns"),
    "slow-front": ActionSpec(True, 5.0, "--netns, front: delay HAProxy's traffic with the node "
                                        "by `delay` ms (default 200) each way, for `duration`"),
}
LATENCY_ACTIONS = frozenset({"slow-redis", "slow-front"})
NETNS_ACTIONS = frozenset({"cut-redis", "cut-redis-oneway", "cut-front", "lossy-node",
                           "split-primary"})
FRONTS = ("none", "haproxy")
NODE_ALIASES = ("leader", "follower")


@dataclass(frozen=True)
class Fault:
    at: float
    action: str
    node: str | None = None
    duration: float | None = None
    master: int | None = None
    delay: float | None = None  # ms each way (slow-redis, slow-front)
    jitter: float | None = None  # + U(0, jitter) ms per chunk, each way

    @property
    def label(self) -> str:
        parts = [self.action]
        if self.node:
            parts.append(self.node)
        if self.master is not None:
            parts.append(f"m{self.master}")
        if self.delay is not None:
            parts.append(f"{self.delay:g}ms" + (f"+-{self.jitter:g}" if self.jitter else ""))
        if self.duration:
            parts.append(f"{self.duration:g}s")
        return " ".join(parts)


@dataclass(frozen=True)
class ClusterShape:
    nodes: int = 3
    masters: int = 2  # per node; 2 or more share the listeners by hand-off
    workers: int = 4  # per node, shared out among its masters
    worker_class: str = "sync"
    threads: int = 1
    app: str = "hello:application"
    app_dir: str = "examples"  # relative to the project root, or absolute

    def node_ids(self) -> list[str]:
        return [f"n{i}" for i in range(1, self.nodes + 1)]

    def worker_concurrency(self) -> int:
        """Requests one worker holds at once: what a kill -9 of it can lose."""
        return self.threads if self.worker_class == "thread" else 1


@dataclass(frozen=True)
class Scenario:
    name: str = "custom"
    duration: float = 60.0  # seconds of load
    users: int = 20
    rate: float = 25.0  # requests/s per user; 0 = as fast as possible
    paths: tuple[str, ...] = ("/",)
    cluster: ClusterShape = field(default_factory=ClusterShape)
    faults: tuple[Fault, ...] = ()
    front: str = "none"  # "haproxy": the load goes through a registry-driven HAProxy

    @property
    def offered_rps(self) -> float | None:
        """Requests/s the users send when nothing stalls them (None: unpaced)."""
        return self.users * self.rate if self.rate else None

    def with_faults(self, extra: list[Fault]) -> Scenario:
        return replace(self, faults=tuple(sorted((*self.faults, *extra), key=lambda f: f.at)))


def _known(kind: str, data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ScenarioError(f"{kind}: unknown key(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(allowed))}")


def _number(kind: str, value: Any, *, integer: bool = False, minimum: float = 0) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            integer and not isinstance(value, int)):
        raise ScenarioError(f"{kind} must be {'an integer' if integer else 'a number'}, "
                            f"not {value!r}")
    if value < minimum:
        raise ScenarioError(f"{kind} must be >= {minimum:g}, not {value!r}")
    return value


def parse_fault(data: dict[str, Any]) -> Fault:
    _known("fault", data, {f.name for f in fields(Fault)})
    action = data.get("action")
    if action not in ACTIONS:
        raise ScenarioError(f"fault action {action!r} is not one of {', '.join(ACTIONS)}")
    spec = ACTIONS[action]
    if "at" not in data:
        raise ScenarioError(f"fault {action}: `at` (seconds after the load started) is missing")
    node = data.get("node")
    if spec.targets_node and not node:
        raise ScenarioError(f"fault {action}: `node` (an id, leader or follower) is missing")
    if not spec.targets_node and node:
        raise ScenarioError(f"fault {action} takes no `node`")
    duration = data.get("duration", spec.default_duration)
    if duration is not None:
        duration = float(_number(f"fault {action} duration", duration, minimum=0.1))
    master = data.get("master")
    if master is not None:
        if action != "kill-master":
            raise ScenarioError(f"fault {action} takes no `master`")
        master = _number("fault kill-master master", master, integer=True)
    delay, jitter = data.get("delay"), data.get("jitter")
    for key, value in (("delay", delay), ("jitter", jitter)):
        if value is not None:
            if action not in LATENCY_ACTIONS:
                raise ScenarioError(f"fault {action} takes no `{key}`")
            _number(f"fault {action} {key} (ms)", value)
    return Fault(float(_number(f"fault {action} at", data["at"], minimum=0.5)), action,
                 str(node) if node else None, duration, master,
                 None if delay is None else float(delay), None if jitter is None else float(jitter))


def parse_cluster(data: dict[str, Any]) -> ClusterShape:
    _known("[cluster]", data, {f.name for f in fields(ClusterShape)})
    shape = ClusterShape(**data)
    for name in ("nodes", "masters", "workers", "threads"):
        _number(f"cluster {name}", getattr(shape, name), integer=True, minimum=1)
    if shape.worker_class not in ("sync", "thread"):
        raise ScenarioError(f"cluster worker_class must be sync or thread, "
                            f"not {shape.worker_class!r}")
    if shape.workers < shape.masters:
        raise ScenarioError(f"cluster workers ({shape.workers}) must be at least masters "
                            f"({shape.masters}): every master needs a worker")
    return shape


def parse_front(value: Any) -> str:
    if value not in FRONTS:
        raise ScenarioError(f"front must be one of {', '.join(FRONTS)}, not {value!r}")
    return str(value)


def parse_scenario(data: dict[str, Any], name: str = "custom") -> Scenario:
    _known("scenario", data, {"name", "duration", "users", "rate", "paths", "cluster", "fault",
                              "faults", "front"})
    raw_faults = [*data.get("fault", []), *data.get("faults", [])]
    scenario = Scenario(
        name=str(data.get("name", name)),
        duration=float(_number("duration", data.get("duration", 60.0), minimum=5)),
        users=_number("users", data.get("users", 20), integer=True, minimum=1),
        rate=float(_number("rate", data.get("rate", 25.0))),
        paths=tuple(data.get("paths", ["/"])),
        cluster=parse_cluster(data.get("cluster", {})),
        front=parse_front(data.get("front", "none")),
    )
    return scenario.with_faults([parse_fault(f) for f in raw_faults])


def load_scenario(path: Path) -> Scenario:
    """Read a .toml, .json, .yaml or .yml scenario file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ScenarioError("YAML scenarios need PyYAML (pip install pyyaml); "
                                    "TOML and JSON need nothing") from None
            data = yaml.safe_load(text)
        else:
            raise ScenarioError(f"scenario {path}: use .toml, .json, .yaml or .yml")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ScenarioError(f"scenario {path} is not valid {suffix[1:]}: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario {path} must be a table/object at the top level")
    return parse_scenario(data, name=path.stem)


def parse_fault_flag(text: str) -> Fault:
    """`AT:ACTION[:NODE][:key=value,...]`, e.g. `20:kill-master:n2:master=1`."""
    parts = text.split(":")
    if len(parts) < 2:
        raise ScenarioError(f"--fault {text!r}: want AT:ACTION[:NODE][:key=value,...]")
    data: dict[str, Any] = {"action": parts[1]}
    try:
        data["at"] = float(parts[0])
    except ValueError:
        raise ScenarioError(f"--fault {text!r}: {parts[0]!r} is not a number of seconds") from None
    for part in parts[2:]:
        if "=" not in part:
            data["node"] = part
            continue
        for pair in part.split(","):
            key, _, value = pair.partition("=")
            try:
                data[key] = int(value) if key == "master" else float(value)
            except ValueError:
                raise ScenarioError(f"--fault {text!r}: {key}={value!r} is not a number") from None
    return parse_fault(data)


def check_fits(scenario: Scenario) -> None:
    """Faults the scenario itself rules out: beyond the load, or naming a node it lacks."""
    ids = set(scenario.cluster.node_ids())
    for fault in scenario.faults:
        if fault.at >= scenario.duration:
            raise ScenarioError(f"fault {fault.label} at {fault.at:g}s is not within the "
                                f"{scenario.duration:g}s of load")
        if fault.node and fault.node not in NODE_ALIASES and fault.node not in ids:
            raise ScenarioError(f"fault {fault.label}: no node {fault.node!r} "
                                f"(nodes: {', '.join(sorted(ids))}, leader, follower)")
        if fault.master is not None and fault.master >= scenario.cluster.masters:
            raise ScenarioError(f"fault {fault.label}: nodes have {scenario.cluster.masters} "
                                f"master(s), indexes from 0")
