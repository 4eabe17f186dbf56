"""The chaos runner's front: a real HAProxy driven by the registry, as in production.

`polycorn-ctl haproxy config` writes the config (HAProxy's log on its stdout, one
line per request and per server state change), `haproxy -db` runs it
in the foreground and `polycorn-ctl haproxy sync` keeps its backend in step with
the registry. All three run under the process tracker. A sampler thread reads
HAProxy's own counters (`show stat`) every SAMPLE_EVERY seconds, so the report
can say, per node, when HAProxy marked it down and when a joining node first
received a request, from HAProxy's point of view rather than Locust's.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from polycorn.ha.haproxy.runtime import RuntimeApi, RuntimeApiError
from polycorn.ha.process_tracker import ProcessTracker

BACKEND = "polycorn"
SLOTS = 16
START_TIMEOUT = 20.0
SAMPLE_EVERY = 0.1  # seconds between two `show stat` reads
LATE_OUT = 2.0  # s after a link heals in which HAProxy may still mark its node down
LINK_FAULTS = ("cut-front", "lossy-node", "slow-front")  # on the front's path to a node
INSTALL_HINT = "haproxy not found on PATH (Debian/Ubuntu: apt-get install haproxy; or `make deps`)"
# HAProxy's `option httplog` line: client, [accept date], frontend, backend/server,
# TR/Tw/Tc/Tr/Ta timers, status, bytes, two cookies, termination state, then
# actconn/feconn/beconn/srv_conn/retries, where the retries carry a '+' when the request
# was redispatched to another server (configuration.txt 8.2.3).
_REQUEST_LINE = re.compile(
    r" \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\.\d{3})\] \S+ ([\w.-]+)/(\S+) "
    r"-?\d+/-?\d+/-?\d+/-?\d+/\+?(-?\d+) (-?\d+) \S+ \S+ \S+ (\S{4}) "
    r"(?:\d+/\d+/\d+/\d+/(\+?)\d+)?")
# `log stdout format iso`: state changes are logged with the time they happened.
_STATE_LINE = re.compile(r"^(\S+T\S+) Server ([\w.-]+)/([\w.-]+) is (\w+)")


class FrontError(RuntimeError):
    pass


@dataclass(frozen=True)
class Request:
    """One request in HAProxy's log."""

    accepted: float  # Unix time HAProxy accepted it
    server: str  # slot name, or "<NOSRV>"
    status: int  # -1: no response
    total_ms: int
    termination: str  # HAProxy's termination state, "----" for a clean end
    # Sent to another server after its first one failed it: HAProxy logs such a request
    # under the server that had it last, so the first one's faults must count it too.
    redispatched: bool = False


@dataclass(frozen=True)
class StateChange:
    at: float
    server: str
    state: str  # UP, DOWN, ...


def parse_log(text: str) -> tuple[list[Request], list[StateChange]]:
    requests, changes = [], []
    for line in text.splitlines():
        m = _REQUEST_LINE.search(line)
        if m:
            # The accept date is in HAProxy's local time, as a naive datetime reads it.
            accepted = datetime.strptime(m[1], "%d/%b/%Y:%H:%M:%S.%f").timestamp()
            requests.append(Request(accepted, m[3], int(m[5]), int(m[4]), m[6], m[7] == "+"))
            continue
        m = _STATE_LINE.match(line)
        if m:
            changes.append(StateChange(datetime.fromisoformat(m[1]).timestamp(), m[3], m[4]))
    return requests, changes


class HaproxyFront:
    """HAProxy + its sync for one cluster, on 127.0.0.1:port (or the front host's address)."""

    def __init__(self, tracker: ProcessTracker, run_dir: Path, cluster: str, redis_url: str,
                 port: int, network: Any = None) -> None:
        # With --netns HAProxy is a host of its own (its sync stays with the runner: it
        # talks to Redis and to HAProxy's Unix socket only).
        self.host = network.add_host("front") if network else "127.0.0.1"
        self.wrap: list[str] = network.wrap("front") if network else []
        self.tracker = tracker
        self.run_dir = run_dir
        self.cluster = cluster
        self.redis_url = redis_url
        self.port = port
        self.url = f"http://{self.host}:{port}"
        self.config = run_dir / "haproxy.cfg"
        self.socket = run_dir / "haproxy.sock"
        self.log_path = run_dir / "haproxy.log"
        self.sync_log = run_dir / "haproxy-sync.log"
        self.api = RuntimeApi(str(self.socket), timeout=1.0)
        self.haproxy: subprocess.Popen | None = None
        self.sync: subprocess.Popen | None = None
        self.samples: list[tuple[float, dict[str, dict[str, str]]]] = []
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def ctl_args(self) -> list[str]:
        return ["--cluster", self.cluster, "--redis", self.redis_url, "--backend", BACKEND]

    def start(self, expected_nodes: int, say=print) -> None:
        if shutil.which("haproxy") is None:
            raise FrontError(INSTALL_HINT)
        argv = [sys.executable, "-m", "polycorn.ha.ctl", "haproxy", "config", *self.ctl_args(),
                "--bind", f"{self.host}:{self.port}", "--slots", str(SLOTS),
                "--runtime-api", f"unix:{self.socket}", "--health-path", "/"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise FrontError(f"polycorn-ctl haproxy config failed: {done.stderr.strip()[-400:]}")
        self.config.write_text(done.stdout)
        check = subprocess.run(["haproxy", "-c", "-f", str(self.config)], capture_output=True,
                               text=True, timeout=30)
        if check.returncode != 0:
            raise FrontError(f"haproxy -c rejects {self.config}: {check.stdout[-400:]}"
                             f"{check.stderr[-400:]}")
        self.start_haproxy()
        self.sync = self.tracker.spawn(
            [sys.executable, "-m", "polycorn.ha.ctl", "haproxy", "sync", *self.ctl_args(),
             "--runtime-api", f"unix:{self.socket}"], log_path=self.sync_log,
            cwd=self.run_dir)
        self.wait_ready(expected_nodes)
        self._sampler = threading.Thread(target=self._sample_loop, name="front-sampler",
                                         daemon=True)
        self._sampler.start()
        say(f"front: haproxy {self.url} (pid {self.haproxy.pid}), sync pid {self.sync.pid}, "
            f"config {self.config}")

    def start_haproxy(self) -> None:
        self.haproxy = self.tracker.spawn([*self.wrap, "haproxy", "-db", "-f", str(self.config)],
                                          log_path=self.log_path, cwd=self.run_dir)

    def servers(self) -> dict[str, dict[str, str]]:
        """slot name -> `show stat` row, for the backend's servers."""
        text = self.api.command("show stat")
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {r["svname"]: r for r in rows
                if r.get("pxname") == BACKEND and r["svname"] not in ("FRONTEND", "BACKEND")}

    def up_addresses(self) -> set[str]:
        """`host:port` of every server HAProxy sends traffic to now."""
        return {r["addr"] for r in self.servers().values() if r["status"] == "UP"}

    def wait_ready(self, expected: int, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.haproxy and self.haproxy.poll() is not None:
                raise FrontError(f"haproxy exited {self.haproxy.returncode}; see {self.log_path}")
            if self.sync and self.sync.poll() is not None:
                raise FrontError(f"the sync exited {self.sync.returncode}; see {self.sync_log}")
            try:
                last = self.up_addresses()
                if len(last) >= expected:
                    return
            except RuntimeApiError as exc:
                last = exc
            time.sleep(0.1)
        raise FrontError(f"the front has {last!r} up, not {expected} nodes, after {timeout:g}s; "
                         f"see {self.sync_log}")

    def _sample_loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            try:
                self.samples.append((time.time(), self.servers()))
            except RuntimeApiError:
                continue  # HAProxy restarting: the next sample will tell

    def stop_sampling(self) -> None:
        self._stop.set()
        if self._sampler:
            self._sampler.join(2)

    def slot_of(self, address: str) -> str | None:
        """The slot that served `host:port` at any time of the run."""
        for _, rows in reversed(self.samples):
            for name, row in rows.items():
                if row.get("addr") == address:
                    return name
        return None

    def log(self) -> tuple[list[Request], list[StateChange]]:
        try:
            return parse_log(self.log_path.read_text(errors="replace"))
        except OSError:
            return [], []



def _out_of_rotation(status: str) -> bool:
    """HAProxy sends no new request to a server in this `show stat` status."""
    return status.startswith(("DOWN", "MAINT", "DRAIN", "NOLB"))


def taken_out_at(front: HaproxyFront, slot: str, since: float) -> float | None:
    """When HAProxy stopped sending new requests to `slot` after `since`: the earlier of
    its log's state change and the first sample showing it out of rotation."""
    times = []
    _, changes = front.log()
    times += [c.at for c in changes if c.server == slot and c.at >= since
              and c.state in ("DOWN", "going")]
    times += [t for t, rows in front.samples if t >= since and slot in rows
              and _out_of_rotation(rows[slot]["status"])][:1]
    return min(times) if times else None


def link_fault_exposed(requests: list[Request], slot: str, started: float, ended: float,
                       out_at: float | None) -> list[Request]:
    """The requests a cut, lossy or slow link between HAProxy and a node can lose: those HAProxy
    had on that node at some moment of the fault, i.e. whose life on it [accepted, accepted
    + total time] overlaps [start, end]. The end is when HAProxy took the node out if
    that came first, or within LATE_OUT after the heal (checks sent during the fault
    can still mark it down, and the sync then closes what it holds: `shutdown sessions
    server`, ha/haproxy/hung.py; all accepted before it was taken out). Nothing else can fail because of the link: a connection attempt that times
    out is retried on another node (retry-on conn-failure, redispatch), and HAProxy logs
    each request once, under the node that had it last: a request redispatched off this
    node (its sessions shut once its checks failed, ha/haproxy/hung.py) shows another
    node, so every redispatched request of the window counts (chaos --random 1: six
    requests waited 2.6 s on a slowed node, were answered 200 elsewhere and had timed
    out at the client, allowance 0)."""
    end = ended
    if out_at is not None and out_at <= ended + LATE_OUT:
        end = out_at
    return [r for r in requests if (r.server == slot or r.redispatched) and r.accepted <= end
            and r.accepted + max(r.total_ms, 0) / 1000 >= started]


def front_facts(front: HaproxyFront, records: list[Any], cluster: Any, offered: float | None,
                seconds: list[dict[str, Any]]) -> None:
    """What HAProxy saw of each host-level fault, into each record's facts (and, for a
    paused node, its allowance). Called once after the load stopped."""
    requests, _ = front.log()
    for rec in records:
        if rec.started is None or rec.node is None or rec.node not in cluster.nodes:
            continue
        node = cluster.nodes[rec.node]
        address = f"{getattr(node, 'host', '127.0.0.1')}:{node.port}"
        slot = front.slot_of(address)
        if slot is None:
            continue
        rec.facts["slot"] = slot
        action = rec.fault.action
        if action in ("kill-node", "pause-node", *LINK_FAULTS):
            out_at = taken_out_at(front, slot, rec.started)
            rec.facts["front_out_s"] = None if out_at is None else round(out_at - rec.started, 2)
        if action in LINK_FAULTS and rec.ended is not None:
            rec.allowed_failures = len(link_fault_exposed(requests, slot, rec.started,
                                                          rec.ended, out_at))
            rec.facts["exposed_requests"] = rec.allowed_failures
        if action == "pause-node":
            if out_at is None:
                rec.detail += "; HAProxy never took the paused node out"
            else:
                sent = [r for r in requests if (r.server == slot or r.redispatched)
                        and rec.started <= r.accepted <= out_at]
                rec.allowed_failures = len(sent)
                rec.facts["sent_before_out"] = len(sent)
            if offered and rec.ended:
                paused = [s["requests"] for s in seconds
                          if rec.started <= s["t"] and s["t"] + 1 <= rec.ended]
                if paused:
                    rec.facts["pause_throughput_share"] = round(
                        sum(paused) / (len(paused) * offered), 2)
        if action == "join-node" and rec.facts.get("ready_at"):
            ready = rec.facts["ready_at"]
            first = min((r.accepted for r in requests if r.server == slot), default=None)
            rec.facts["first_request_after_ready_s"] = (
                None if first is None else round(max(0.0, first - ready), 2))
