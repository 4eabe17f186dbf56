"""Locust as a subprocess of the chaos runner, and what it leaves behind.

Locust monkey-patches its process with gevent, so it never runs inside the
runner: it is started headless on loadtests/locustfile.py, writes the per-second
timeline (read only after it exits) and its own final JSON (`--json-file`), whose
per-endpoint rows are summed to cross-check the timeline's totals.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polycorn.ha.process_tracker import ProcessTracker

from loadtests.scenario import Scenario

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
START_TIMEOUT = 30.0  # seconds for Locust to import, parse and write the timeline header
STOP_GRACE = 30.0  # seconds beyond the run time before Locust is declared hung


class LocustError(RuntimeError):
    pass


@dataclass
class LocustOutput:
    exit_code: int
    header: dict[str, Any]
    seconds: list[dict[str, Any]]  # one line per second, in time order
    totals: dict[str, int]  # from Locust's JSON: requests, failures
    log_tail: str


def locust_argv(scenario: Scenario, urls: list[str], out_dir: Path) -> list[str]:
    users = str(scenario.users)
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "-u", users, "-r", users, "-t", f"{scenario.duration:g}s", "--stop-timeout", "3",
            "--nodes", ",".join(urls), "--paths", ",".join(scenario.paths),
            "--rate", f"{scenario.rate:g}", "--timeline-file", str(out_dir / "timeline.jsonl"),
            "--json-file", str(out_dir / "locust"), "--only-summary", "--loglevel", "WARNING"]


class LocustRun:
    def __init__(self, scenario: Scenario, urls: list[str], out_dir: Path,
                 tracker: ProcessTracker) -> None:
        self.scenario = scenario
        self.out_dir = out_dir
        self.timeline = out_dir / "timeline.jsonl"
        self.log_path = out_dir / "locust.log"
        self.timeline.unlink(missing_ok=True)
        self.proc = tracker.spawn(locust_argv(scenario, urls, out_dir), log_path=self.log_path,
                                  cwd=Path(__file__).resolve().parents[1])

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_started(self) -> float:
        """Unix time the load started (the timeline header), once Locust is up."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            header = self._header()
            if header is not None:
                return float(header["started"])
            if not self.running():
                raise LocustError(f"Locust exited ({self.proc.returncode}) before the load "
                                  f"started:\n{self._tail()}")
            time.sleep(0.05)
        raise LocustError(f"Locust did not start within {START_TIMEOUT:g}s:\n{self._tail()}")

    def wait(self) -> LocustOutput:
        try:
            self.proc.wait(self.scenario.duration + STOP_GRACE)
        except subprocess.TimeoutExpired:
            raise LocustError(f"Locust did not stop; see {self.log_path}") from None
        lines = [json.loads(line) for line in self.timeline.read_text().splitlines() if line]
        header = next((line["header"] for line in lines if "header" in line), {})
        seconds = sorted((line for line in lines if "t" in line), key=lambda line: line["t"])
        return LocustOutput(self.proc.returncode, header, _merge_seconds(seconds),
                            self._totals(), self._tail())

    def _header(self) -> dict[str, Any] | None:
        try:
            first = self.timeline.read_text().split("\n", 1)[0]
            return json.loads(first)["header"] if first.endswith("}") else None
        except (OSError, ValueError, KeyError):
            return None

    def _totals(self) -> dict[str, int]:
        path = self.out_dir / "locust.json"
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return {"requests": sum(r.get("num_requests", 0) for r in rows),
                "failures": sum(r.get("num_failures", 0) for r in rows)}

    def _tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _merge_seconds(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per second. Seconds are keyed by wall-clock time, so a clock stepped back
    (NTP) could make Locust write one second twice: add such lines up."""
    merged: dict[int, dict[str, Any]] = {}
    for line in lines:
        seen = merged.get(line["t"])
        if seen is None:
            merged[line["t"]] = line
            continue
        # Latency percentiles cannot be merged exactly: keep the larger sample's.
        big = line if line["requests"] > seen["requests"] else seen
        merged[line["t"]] = {**big, "requests": seen["requests"] + line["requests"],
                             "failures": seen["failures"] + line["failures"],
                             "retried": seen["retried"] + line["retried"],
                             "errors": _add_counts(seen["errors"], line["errors"]),
                             "nodes": _add_pairs(seen["nodes"], line["nodes"])}
    return [merged[t] for t in sorted(merged)]


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in sorted({*a, *b})}


def _add_pairs(a: dict[str, list[int]], b: dict[str, list[int]]) -> dict[str, list[int]]:
    zero = [0, 0]
    return {k: [a.get(k, zero)[0] + b.get(k, zero)[0], a.get(k, zero)[1] + b.get(k, zero)[1]]
            for k in sorted({*a, *b})}
