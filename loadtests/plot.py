"""The chaos run as a PNG: requests/s, failures/s and latency over time, faults marked.

Three panels share the time axis (seconds since the load started); every fault
is a dashed line across all three, labelled on top, and a fault that lasts
(pause, Redis down, an upgrade) is a shaded span. matplotlib comes with the
`load` extra and runs with the Agg backend: no display needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"kill-worker": "tab:orange", "kill-master": "tab:red", "kill-node": "black",
          "kill-leader": "tab:purple", "usr2": "tab:green", "hup": "tab:olive",
          "pause-node": "tab:brown", "stop-redis": "tab:blue", "sentinel-failover": "tab:cyan",
          "rolling-upgrade": "tab:pink"}


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    seconds = report["timeline"]
    t = [s["t"] for s in seconds]  # second t covers [t, t + 1): bars from t, points mid-way
    mid = [x + 0.5 for x in t]
    fig, (ax_rps, ax_fail, ax_lat) = plt.subplots(
        3, 1, sharex=True, figsize=(12, 7.5), height_ratios=[2, 1.2, 2])
    ax_rps.plot(mid, [s["requests"] for s in seconds], color="tab:blue", lw=1.2)
    ax_rps.set_ylabel("requests/s")
    # Headroom above the line for the fault labels.
    ax_rps.set_ylim(bottom=0, top=max([1, *(s["requests"] for s in seconds)]) * 1.35)
    ax_fail.bar(t, [s["failures"] for s in seconds], width=0.9, align="edge", color="tab:red",
                label="failed")
    ax_fail.bar(t, [s["retried"] for s in seconds], width=0.9, align="edge", color="tab:orange",
                alpha=0.6,
                bottom=[s["failures"] for s in seconds], label="retried (idle keep-alive)")
    ax_fail.set_ylabel("per second")
    ax_fail.set_ylim(bottom=0, top=max([1, *(s["failures"] + s["retried"] for s in seconds)])
                     * 1.25)
    ax_fail.legend(loc="upper right", fontsize=8)
    nan = float("nan")  # a second without a completed request has no latency
    for key, style in (("p50", ":"), ("p95", "-"), ("p99", "--")):
        ax_lat.plot(mid, [nan if s[key] is None else s[key] for s in seconds], style, lw=1,
                    label=key)
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_yscale("log")
    ax_lat.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1, 2, 5)))
    ax_lat.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: f"{v:g}"))
    ax_lat.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_lat.legend(loc="upper right", fontsize=8)
    ax_lat.set_xlabel("seconds since the load started")
    for fault in report["faults"]:
        start = fault.get("started_s")
        if start is None:
            continue
        color = COLORS.get(fault["action"], "gray")
        for ax in (ax_rps, ax_fail, ax_lat):
            ax.axvline(start, color=color, ls="--", lw=1)
            if fault.get("ended_s"):
                ax.axvspan(start, fault["ended_s"], color=color, alpha=0.12)
        outcome = ("FAILED TO RUN" if fault["outcome"] == "failed"
                   else f"{fault.get('failed', 0)} failed")
        ax_rps.annotate(f"{fault['label']}\n{outcome}", xy=(start, 1.0),
                        xycoords=("data", "axes fraction"), xytext=(2, -2),
                        textcoords="offset points", va="top", fontsize=7, color=color,
                        rotation=0)
    totals = report["totals"]
    sc = report["scenario"]
    fig.suptitle(f"Polycorn chaos '{sc['name']}': {totals['requests']} requests, "
                 f"{totals['failed']} failed, {totals['retried']} retried", fontsize=11)
    for ax in (ax_rps, ax_fail, ax_lat):
        ax.grid(alpha=0.3)
    skipped = [f"{f['label']} at {f['at']:g}s" for f in report["faults"]
               if f["outcome"] == "unavailable"]
    if skipped:
        fig.text(0.01, 0.005, "unavailable, not run: " + "; ".join(skipped), fontsize=7,
                 color="gray", va="bottom")
    fig.tight_layout(rect=(0, 0.02 if skipped else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":  # redraw: python -m loadtests.plot REPORT.json OUT.png
    import json
    import sys

    plot(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
