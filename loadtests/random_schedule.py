"""Random fault schedules: overlapping faults drawn from the whole list by a seeded generator.

`draw(seed, ...)` is pure: the same seed, duration and cluster give the same
schedule, so a run that broke an invariant can be replayed. Only the schedule
replays: the processes, the kernel and the load interleave differently on every
run, so a replay may take another path through the same faults (Jepsen's
schedules have the same limit). Faults start from FIRST_AT and stop QUIET seconds
before the end, so the checker can see capacity come back (node TTL + lease +
5 s); lasting faults (pauses, Redis down, drains, restarts) overlap the next ones.
"""

from __future__ import annotations

import random

from loadtests.scenario import ClusterShape, Fault, ScenarioError

FIRST_AT = 4.0  # seconds of clean load before the first fault (a baseline)
QUIET = 17.0  # seconds without a new fault at the end: TTL 3 + lease 6 + 5, and margin
MEAN_GAP = 3.0  # mean seconds between two fault starts (exponential)
MIN_GAP = 0.5
# action -> weight; per-run caps below keep a short run from being all upgrades.
WEIGHTS = {"kill-worker": 3, "kill-master": 2, "kill-leader": 2, "kill-node": 2,
           "pause-node": 2, "usr2": 2, "hup": 1, "stop-redis": 1, "sentinel-failover": 2,
           "rolling-upgrade": 1, "drain-node": 2, "join-node": 1,
           # partitions (--netns)
           "cut-redis": 2, "cut-redis-oneway": 1, "cut-front": 1, "lossy-node": 1,
           "split-primary": 1}
CAPS = {"rolling-upgrade": 1, "join-node": 1, "stop-redis": 2, "kill-node": 2}
# The latency faults come from a second generator seeded from the same seed, drawn after
# the rest: every schedule drawn before they existed keeps its faults, at the same times
# (the seeds kept as regression tests still replay), and gains 0-2 latency faults.
LATENCY = ("slow-redis", "slow-front")
LATENCY_DELAYS_MS = (50.0, 200.0, 1000.0, 2000.0)
MAX_LATENCY_FAULTS = 2
NEEDS_SENTINEL = {"sentinel-failover", "split-primary"}


def minimum_duration() -> float:
    return FIRST_AT + QUIET + 4.0


def draw(seed: int, duration: float, shape: ClusterShape, *, redis_mode: str = "single",
         unavailable: frozenset[str] = frozenset()) -> tuple[Fault, ...]:
    """The faults of one random schedule (sorted by time)."""
    if duration < minimum_duration():
        raise ScenarioError(f"a random schedule needs --duration >= {minimum_duration():g} "
                            f"(faults from {FIRST_AT:g}s, then {QUIET:g}s quiet for the "
                            f"checker)")
    rng = random.Random(seed)
    pool = {a: w for a, w in WEIGHTS.items() if a not in unavailable
            and not (a in NEEDS_SENTINEL and redis_mode != "sentinel")}
    targets = [*shape.node_ids(), "leader", "follower"]
    faults: list[Fault] = []
    used: dict[str, int] = {}
    t = FIRST_AT + rng.uniform(0, 1)
    while round(t, 1) < duration - QUIET:
        open_actions = [a for a in pool if used.get(a, 0) < CAPS.get(a, 99)]
        action = rng.choices(open_actions, [pool[a] for a in open_actions])[0]
        used[action] = used.get(action, 0) + 1
        faults.append(_fault(rng, round(t, 1), action, targets, shape))
        t += max(MIN_GAP, rng.expovariate(1 / MEAN_GAP))
    latency = [a for a in LATENCY if a not in unavailable and redis_mode != "none"]
    if latency:
        faults += _latency_faults(random.Random(f"latency-{seed}"), duration, targets, latency)
    return tuple(sorted(faults, key=lambda f: f.at))


def _latency_faults(rng: random.Random, duration: float, targets: list[str],
                    actions: list[str]) -> list[Fault]:
    return [Fault(round(rng.uniform(FIRST_AT, duration - QUIET), 1), rng.choice(actions),
                  rng.choice(targets), round(rng.uniform(2.0, 6.0), 1),
                  delay=rng.choice(LATENCY_DELAYS_MS))
            for _ in range(rng.randint(0, MAX_LATENCY_FAULTS))]


def _fault(rng: random.Random, at: float, action: str, targets: list[str],
           shape: ClusterShape) -> Fault:
    node = None if action in ("kill-leader", "stop-redis", "sentinel-failover",
                              "rolling-upgrade", "join-node", "split-primary") \
        else rng.choice(targets)
    duration = master = None
    if action == "pause-node":
        duration = round(rng.uniform(1.5, 4.0), 1)
    elif action == "kill-node":  # always back: a schedule that only shrinks proves little
        duration = round(rng.uniform(1.5, 4.0), 1)
    elif action == "stop-redis":
        duration = round(rng.uniform(1.0, 3.0), 1)
    elif action == "drain-node":
        duration = round(rng.uniform(2.0, 5.0), 1)
    elif action in ("cut-redis", "cut-redis-oneway", "cut-front", "lossy-node",
                    "split-primary"):
        duration = round(rng.uniform(2.0, 6.0), 1)
    elif action == "kill-master":
        master = rng.randrange(shape.masters)
    return Fault(at, action, node, duration, master)


def describe(faults: tuple[Fault, ...]) -> str:
    return ", ".join(f"{f.at:g}s {f.label}" for f in faults)
