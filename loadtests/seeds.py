"""Run many random chaos schedules one after another and print their table (Markdown).

    python -m loadtests.seeds --seeds 1-20 --duration 90 [--out DIR] [-- CHAOS ARGS...]

Each seed is one `python -m loadtests.chaos --random SEED` run in its own report
directory; the row says how many faults were drawn (and how many ran), the requests,
the failed ones against the allowance of the faults that ran ("any" when one of them
may lose any number, e.g. a node killed without a front), and the invariants held.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HEADER = ("| seed | faults (ran) | requests | failed | allowance | invariants held | broken |\n"
          "|---:|---:|---:|---:|---:|---:|---|")


def seed_list(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds += range(int(first), int(last or first) + 1)
    return seeds


def row(seed: int, report: dict[str, Any]) -> str:
    faults = report.get("faults", [])
    ran = [f for f in faults if f.get("started_s") is not None]
    allowances = [f.get("allowed_failures") for f in ran]
    allowance = "any" if None in allowances else str(sum(allowances))
    invariants = report.get("invariants", [])
    held = sum(1 for i in invariants if i["held"])
    broken = ", ".join(i["name"] for i in invariants if not i["held"]) or "-"
    totals = report.get("totals", {})
    return (f"| {seed} | {len(faults)} ({len(ran)}) | {totals.get('requests', 0)} | "
            f"{totals.get('failed', 0)} | {allowance} | {held}/{len(invariants)} | {broken} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.seeds", description=__doc__)
    p.add_argument("--seeds", default="1-20", help="e.g. 1-20 or 1,5,9-12")
    p.add_argument("--duration", type=float, default=90.0)
    p.add_argument("--out", type=Path, default=Path("reports") / "seeds")
    p.add_argument("chaos", nargs=argparse.REMAINDER, help="-- then more chaos arguments")
    args = p.parse_args(argv)
    extra = [a for a in args.chaos if a != "--"]
    rows = []
    print(HEADER, flush=True)
    for seed in seed_list(args.seeds):
        out = (args.out / f"seed-{seed}").resolve()
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "loadtests.chaos", "--random", str(seed),
                        "--duration", f"{args.duration:g}", "--out", str(out), "--no-plot",
                        *extra], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                       timeout=args.duration + 300, check=False)
        try:
            line = row(seed, json.loads((out / "report.json").read_text()))
        except (OSError, ValueError):
            line = f"| {seed} | - | - | - | - | - | no report (see {out}) |"
        rows.append(line)
        print(f"{line}  <!-- {time.monotonic() - started:.0f}s -->", flush=True)
    return 0 if all(r.endswith("| - |") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
