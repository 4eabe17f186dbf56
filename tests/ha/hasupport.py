"""Real redis-server and Sentinel processes for the ha/ tests, and fake nodes; all
cleaned up by pid.

The Redis processes come from the one launcher (polycorn.ha.redis_launcher): each
server is private (a free loopback port, its own directory, no persistence), and
faults are injected on the real process: SIGSTOP, SIGKILL, DEBUG SLEEP, SENTINEL
FAILOVER.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from polycorn.ha.process_tracker import ProcessTracker
from polycorn.ha.redis_launcher import RedisServer, SentinelGroup
from support.procs import wait_until


class RedisFarm:
    """Every Redis process a test started, under one tracker; all killed at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.tracker = ProcessTracker()

    def server(self, **kw) -> RedisServer:
        return RedisServer(self.tracker, self.workdir, **kw).start()

    def sentinel_group(self, service: str = "polymaster") -> SentinelGroup:
        return SentinelGroup(self.tracker, self.workdir, service)

    def stop(self) -> None:
        self.tracker.kill_all()


FAKE_MASTER = Path(__file__).with_name("fake_master.py")


class FakeNode:
    """A fake master process plus the real agent it forked: one cluster node."""

    def __init__(self, workdir: Path, redis_url: str, cluster: str, node_id: str,
                 timing: dict | None = None, state: str = "ready") -> None:
        import json
        import sys

        self.node_id = node_id
        n = sum(1 for _ in workdir.glob(f"{node_id}-*.out"))  # one id may run twice (upgrade)
        self.out_path = workdir / f"{node_id}-{n}.out"
        self.log_path = workdir / f"{node_id}-{n}.log"
        out = open(self.out_path, "wb")  # noqa: SIM115 - the child holds it
        err = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKE_MASTER), "--redis", redis_url, "--cluster", cluster,
             "--node-id", node_id, "--state", state, "--timing", json.dumps(timing or {})],
            stdin=subprocess.PIPE, stdout=out, stderr=err, start_new_session=True)
        out.close()
        err.close()
        self.master_pid = self.proc.pid
        self.agent_pid: int = wait_until(self._agent_pid, 10, what=f"{node_id} agent pid")

    def _agent_pid(self) -> int | None:
        for msg in self.messages():
            if "agent" in msg:
                return msg["agent"]
        if self.proc.poll() is not None:
            raise AssertionError(f"fake master {self.node_id} exited:\n{self.log()}")
        return None

    def messages(self) -> list[dict]:
        import json

        lines = self.out_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip().startswith("{")]

    def commands(self) -> list[dict]:
        return [m for m in self.messages() if m.get("type") == "command"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, message: dict) -> None:
        import json

        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def set_state(self, state: str, workers: int = 2) -> None:
        self.send({"type": "state", "state": state, "workers": workers,
                   "workers_configured": 2, "max_workers": 4, "pid": self.master_pid,
                   "reason": "test"})

    def agent_alive(self) -> bool:
        from support.procs import alive

        return alive(self.agent_pid)

    def kill_master(self) -> None:
        os.kill(self.master_pid, signal.SIGKILL)
        self.proc.wait(5)

    def kill_node(self) -> None:
        """kill -9 of the whole node: agent and master at once."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.agent_pid, signal.SIGKILL)
        self.kill_master()

    def stop(self) -> None:
        for pid in (self.agent_pid, self.master_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
