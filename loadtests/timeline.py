"""Per-second request counts and latency, recorded inside Locust, one JSON line a second.

Locust's own CSV history is rewritten every second and stale at exit, so the
locustfile feeds every request event into SecondBuckets (keyed by the Unix second
in which the request completed) and a greenlet writes each second once it is
closed; the rest is flushed when Locust stops. The first line describes the run.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

CLOSE_AFTER = 1.5  # seconds after its end before a bucket is written: late events land in it


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of an ascending list; None when empty."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def failure_kind(exc: BaseException) -> str:
    """A short, stable label for why a request failed (the report groups by it)."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int) and status:
        return f"HTTP {status}"
    name = type(exc).__name__
    if "timeout" in name.lower() or "timed out" in str(exc).lower():
        return "timeout"
    return name


@dataclass
class Bucket:
    second: int
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0
    retried: int = 0
    errors: Counter = field(default_factory=Counter)
    nodes: dict[str, list[int]] = field(default_factory=dict)  # node -> [requests, failures]

    def as_line(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)

        def ms(q: float) -> float | None:
            value = percentile(ordered, q)
            return None if value is None else round(value, 2)

        return {"t": self.second, "requests": len(ordered), "failures": self.failures,
                "retried": self.retried, "p50": ms(0.50), "p95": ms(0.95), "p99": ms(0.99),
                "max": ms(1.0), "errors": dict(self.errors),
                "nodes": {k: v for k, v in sorted(self.nodes.items())}}


class SecondBuckets:
    """Requests grouped by the second they completed in; pure, no I/O."""

    def __init__(self) -> None:
        self._open: dict[int, Bucket] = {}

    def _bucket(self, when: float) -> Bucket:
        second = int(when)
        bucket = self._open.get(second)
        if bucket is None:
            bucket = self._open[second] = Bucket(second)
        return bucket

    def add(self, done_at: float, response_ms: float, node: str,
            error: BaseException | None = None) -> None:
        bucket = self._bucket(done_at)
        bucket.latencies_ms.append(response_ms)
        counts = bucket.nodes.setdefault(node, [0, 0])
        counts[0] += 1
        if error is not None:
            bucket.failures += 1
            bucket.errors[failure_kind(error)] += 1
            counts[1] += 1

    def add_retry(self, when: float) -> None:
        self._bucket(when).retried += 1

    def pop_closed(self, now: float) -> list[dict[str, Any]]:
        """Lines of every second that ended at least CLOSE_AFTER seconds before now."""
        done = sorted(s for s in self._open if s + 1 + CLOSE_AFTER <= now)
        return [self._open.pop(s).as_line() for s in done]

    def pop_all(self) -> list[dict[str, Any]]:
        lines = [self._open[s].as_line() for s in sorted(self._open)]
        self._open.clear()
        return lines


class TimelineWriter:
    """Appends JSON lines to a file: a header once, then one line per second."""

    def __init__(self, out: IO[str], header: dict[str, Any]) -> None:
        self.out = out
        self.write({"header": header})

    def write(self, line: dict[str, Any]) -> None:
        self.out.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.out.flush()

    def write_all(self, lines: list[dict[str, Any]]) -> None:
        for line in lines:
            self.write(line)
