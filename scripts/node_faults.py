"""Measure one host's faults under steady load: failed requests and recovery times.

Runs each node-level scenario against real polycorn processes on loopback with
the test suite's load driver (threads on new and keep-alive connections, every
refused/reset/timed-out/truncated/5xx request counted) and prints a table.

    .venv/bin/python scripts/node_faults.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from polycorn.server import pidfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.load import Load  # noqa: E402
from support.procs import (  # noqa: E402
    alive,
    children,
    descendants,
    free_port,
    kill_all,
    live_masters,
    named_pids,
    port_open,
    unique_name,
    wait_until,
)

TESTAPP = (ROOT / "tests" / "apps" / "testapp.py").read_text()


def polycorn(name: str, args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """A master named `name` (-n): its title, and cleanup() finds all its processes by it."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "polycorn.server.main", "-n", name, *args],
                                cwd=cwd,
                                stdout=out, stderr=out, start_new_session=True,
                                env={**os.environ, "PWD": str(cwd)})


def release(base: Path, name: str, extra: str = "", health: int = 200) -> Path:
    rel = base / "releases" / name
    rel.mkdir(parents=True, exist_ok=True)
    code = TESTAPP.replace('int(os.environ.get("HEALTH_STATUS", "200"))', str(health)) + extra
    (rel / "testapp.py").write_text(code)
    (rel / "VERSION").write_text(name)
    tmp = base / "current.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(rel)
    os.replace(tmp, base / "current")
    return rel


def ctl_upgrade(pid_path: Path) -> tuple[int, float, str]:
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "polycorn.server.main", "--upgrade", str(pid_path)],
                       capture_output=True, text=True, timeout=150)
    return r.returncode, time.monotonic() - started, (r.stdout + r.stderr).strip()


def cleanup(name: str) -> None:
    pids = set(named_pids(name))
    for pid in list(pids):
        pids.update(descendants(pid))
    kill_all(pids)


def single_master_scenarios(work: Path) -> list[dict]:
    rows = []
    base = work / "site"
    release(base, "A")
    port, pid_path, name = free_port(), work / "single.pid", unique_name()
    proc = polycorn(name, ["-b", f"127.0.0.1:{port}", "-w", "2", "-p", str(pid_path), "--health-check",
                     "/health", "--chdir", str(base / "current"), "testapp:application"],
                    base / "current", work / "single.log")
    try:
        wait_until(lambda: port_open(port), 15, what="the server")
        with Load(port, threads=6) as load:
            load.wait_requests(200)

            def measure(name: str, action, expect_ok: bool) -> None:
                before = (load.result.ok, load.result.failed, load.result.retried)
                rc, seconds, text = action()
                load.wait_requests(200)
                rows.append({"scenario": name, "ok": load.result.ok - before[0],
                             "failed": load.result.failed - before[1],
                             "retried": load.result.retried - before[2],
                             "seconds": round(seconds, 2), "outcome": text.splitlines()[-1][:70],
                             "as_expected": (rc == 0) == expect_ok})

            release(base, "B")
            measure("USR2 to a new release", lambda: ctl_upgrade(pid_path), True)
            release(base, "C", extra="\nraise ImportError('broken release')\n")
            measure("USR2 to a release that fails to import", lambda: ctl_upgrade(pid_path), False)
            release(base, "D", health=500)
            measure("USR2 to a release whose health check is 500", lambda: ctl_upgrade(pid_path),
                    False)
            release(base, "E")

            def twenty():
                started = time.monotonic()
                for _ in range(20):
                    rc, _, text = ctl_upgrade(pid_path)
                    if rc:
                        return rc, time.monotonic() - started, text
                return 0, time.monotonic() - started, "20 upgrades promoted"
            measure("20 USR2 upgrades in a row", twenty, True)

            def hup():
                master = pidfile.running_pid(str(pid_path))
                old = set(children(master))
                started = time.monotonic()
                os.kill(master, signal.SIGHUP)
                wait_until(lambda: len(set(children(master)) - old) == 2
                           and not (set(children(master)) & old), 20, what="new workers")
                return 0, time.monotonic() - started, "workers replaced"
            measure("HUP (reload) under load", hup, True)

            def kill_worker():
                master = pidfile.running_pid(str(pid_path))
                victim = children(master)[0]
                started = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                wait_until(lambda: victim not in children(master) and len(children(master)) == 2,
                           10, what="a replacement worker")
                return 0, time.monotonic() - started, "worker replaced"
            measure("kill -9 of a worker", kill_worker, True)
    finally:
        cleanup(name)
        proc.wait(5)
    return rows


def multi_master_scenario(work: Path) -> list[dict]:
    port, pid_path, name = free_port(), work / "multi.pid", unique_name()
    apps = ROOT / "tests" / "apps"
    proc = polycorn(name, ["-b", f"127.0.0.1:{port}", "-w", "4", "--masters", "2", "--handoff",
                     str(work / "h.sock"), "-p", str(pid_path), "testapp:application"], apps,
                    work / "multi.log")

    def masters() -> dict[int, int]:
        return live_masters(pid_path)

    def workers() -> int:
        group = set(masters().values())
        return sum(1 for m in group for c in children(m) if alive(c) and c not in group)

    rows = []
    try:
        wait_until(lambda: len(masters()) == 2 and workers() == 4, 20, what="two masters")
        with Load(port, "/pid", threads=6) as load:
            load.wait_requests(200)
            for index in (0, 1, 0, 1):
                before = (load.result.ok, load.result.failed, load.result.retried)
                victim = masters()[index]
                started = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                wait_until(lambda v=victim, i=index: masters().get(i, v) != v and workers() == 4,
                           15, what="the master restarted")
                seconds = time.monotonic() - started
                load.wait_requests(200)
                rows.append({"scenario": f"kill -9 of master {index} (--masters 2)",
                             "ok": load.result.ok - before[0],
                             "failed": load.result.failed - before[1],
                             "retried": load.result.retried - before[2],
                             "seconds": round(seconds, 2),
                             "outcome": "capacity restored (4 workers)", "as_expected": True})
    finally:
        cleanup(name)
        proc.wait(5)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="polycorn-faults-"))
    try:
        rows = single_master_scenarios(work) + multi_master_scenario(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| scenario | requests ok | failed | idle-close retries | seconds | outcome |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['ok']} | {r['failed']} | {r['retried']} | {r['seconds']} "
              f"| {r['outcome']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    bad = [r for r in rows if not r["as_expected"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
