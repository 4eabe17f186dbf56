"""One benchmarked server and wrk against it (bench.py): the server started pinned to a
CPU, its process tree, CPU time and memory read from /proc, wrk's report parsed.

Every process of the tree is remembered as it is seen, and all are killed by pid on
stop(), so a server that forks late still leaves nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loadtests.bench import Server

HERE = Path(__file__).resolve().parent

# -- processes ---------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
    return sorted(found)


def tree(pid: int) -> list[int]:
    pids, todo = [pid], [pid]
    while todo:
        for child in children(todo.pop()):
            pids.append(child)
            todo.append(child)
    return pids


def rss_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    return None


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def private_dirty_kib(pid: int) -> int | None:
    """The memory pages only this process has written: what one more worker costs.

    Not USS: that also counts file pages only this process happens to map (a C
    extension's code that only one worker has run yet), which are shared as soon as
    a second worker runs it.
    """
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Private_Dirty:"):
                    return int(line.split()[1])
    return None


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime, in ticks
    return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A started server: its pid and every descendant seen, all killed by pid on stop()."""

    def __init__(self, server: Server, app: str, threads: int, cpu: str, log: Path) -> None:
        self.port = free_port()
        self.tls = server.tls
        argv = server.command(self.port, app, threads)
        env = {**os.environ, **server.env,
               "PYTHONPATH": os.pathsep.join([*server.pythonpath, str(HERE)])}
        env.pop("POLYCORN_CMD_ARGS", None)
        env.pop("GUNICORN_CMD_ARGS", None)
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["taskset", "-c", cpu, *argv], cwd=HERE, env=env,
                                     stdout=self._log, stderr=self._log, start_new_session=True)
        self.seen = {self.proc.pid}

    def pids(self) -> list[int]:
        pids = tree(self.proc.pid)
        self.seen.update(pids)
        return pids

    def wait_ready(self, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode} (see the log)")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = (http.client.HTTPSConnection(  # our own self-signed certificate
                    "127.0.0.1", self.port, timeout=2, context=ssl._create_unverified_context())
                    if self.tls else http.client.HTTPConnection("127.0.0.1", self.port,
                                                                timeout=2))
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    conn.close()
                    self.pids()
                    return
            time.sleep(0.1)
        raise RuntimeError("not ready in time")

    def worker_pid(self) -> int:
        """The worker (the process itself for a server without workers)."""
        workers = children(self.proc.pid)
        # Not a sidecar (--metrics-bind forks one before the workers): a titled worker.
        titled = [pid for pid in workers if cmdline(pid).startswith(b"polycorn: worker")]
        return (titled or workers or [self.proc.pid])[0]

    def memory(self) -> tuple[int | None, int | None]:
        """(idle worker RSS, master RSS) in KiB; a single process has no master."""
        worker = self.worker_pid()
        master = rss_kib(self.proc.pid) if worker != self.proc.pid else None
        return rss_kib(worker), master

    def stop(self) -> None:
        self.pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.seen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2 if sig == signal.SIGTERM else 10)
        self._log.close()


# -- wrk -----------------------------------------------------------------------------------

@dataclass
class Run:
    rep: int
    server: str
    app: str
    mode: str
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_request: float
    worker_rss_kib: int | None
    worker_private_kib: int | None  # after the runs of this repetition, idle again
    master_rss_kib: int | None


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS_MS[unit]


def parse_wrk(out: str) -> dict:
    def grab(pattern: str, default: str = "0") -> str:
        match = re.search(pattern, out)
        return match.group(1) if match else default
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    errors += int(grab(r"Non-2xx or 3xx responses: (\d+)"))
    return {"rps": float(grab(r"Requests/sec:\s+([\d.]+)")),
            "requests": int(grab(r"(\d+) requests in")),
            "p50_ms": _ms(grab(r"\s50%\s+([\d.]+\w+)", "0us")),
            "p99_ms": _ms(grab(r"\s99%\s+([\d.]+\w+)", "0us")),
            "errors": errors}


def wrk(port: int, app: str, mode: str, seconds: float, args: argparse.Namespace,
        post_script: Path, tls: bool = False) -> str:
    argv = ["taskset", "-c", args.client_cpu, "wrk", "-t1", f"-c{args.connections}",
            f"-d{max(1, round(seconds))}s", "--latency"]
    if mode == "close":
        argv += ["-H", "Connection: close"]
    if app == "echo":
        argv += ["-s", str(post_script)]
    argv.append(f"{'https' if tls else 'http'}://127.0.0.1:{port}/")
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout
