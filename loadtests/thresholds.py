"""Locust's exit code from thresholds instead of "1 on any failure".

A user who kills a node on purpose expects some loss; they state how much is
acceptable (failure ratio, p95 latency) and the run fails only beyond that.
Without any threshold Locust keeps its own rule.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    max_fail_ratio: float | None = None  # failed / all requests, 0..1
    max_p95_ms: float | None = None

    @property
    def given(self) -> bool:
        return self.max_fail_ratio is not None or self.max_p95_ms is not None


def verdict(limits: Thresholds, requests: int, failures: int,
            p95_ms: float | None) -> tuple[int, list[str]]:
    """(exit code, one sentence per threshold): 0 when every given threshold holds."""
    reasons: list[str] = []
    code = 0
    if requests == 0:
        return 1, ["no request completed: nothing was measured"]
    if limits.max_fail_ratio is not None:
        ratio = failures / requests
        ok = ratio <= limits.max_fail_ratio
        code |= not ok
        reasons.append(f"failure ratio {ratio:.4%} ({failures}/{requests}) "
                       f"{'<=' if ok else '>'} {limits.max_fail_ratio:.4%}")
    if limits.max_p95_ms is not None:
        ok = p95_ms is not None and p95_ms <= limits.max_p95_ms
        code |= not ok
        shown = "n/a" if p95_ms is None else f"{p95_ms:g} ms"
        reasons.append(f"p95 {shown} {'<=' if ok else '>'} {limits.max_p95_ms:g} ms")
    return int(code), reasons
