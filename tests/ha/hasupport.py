"""Real redis-server and Sentinel processes for the ha/ tests, cleaned up by pid.

Each server is private: a free loopback port, its own directory, no persistence
(`--save "" --appendonly no`). Faults are injected on the real process: SIGSTOP,
SIGKILL, DEBUG SLEEP, SENTINEL FAILOVER.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis
from support.procs import free_port, wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisProc:
    """One redis-server (or sentinel) process."""

    def __init__(self, workdir: Path, *, port: int | None = None, extra: list[str] | None = None,
                 sentinel_conf: str | None = None) -> None:
        self.port = port or free_port()
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra = extra or []
        self.sentinel_conf = sentinel_conf
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115 - closed with the process
        if self.sentinel_conf is not None:
            conf = self.dir / "sentinel.conf"
            conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                            + self.sentinel_conf)
            argv = [REDIS_SERVER, str(conf), "--sentinel"]
        else:
            argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--dir", str(self.dir), *self.extra]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_until(self.ping, 10, what=f"redis on port {self.port}")

    def client(self, **kw) -> redis.Redis:
        return redis.Redis(port=self.port, host="127.0.0.1", decode_responses=True,
                           socket_timeout=2, socket_connect_timeout=1, **kw)

    def ping(self) -> bool:
        try:
            with self.client() as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL by pid and reap; the port is free again afterwards."""
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)  # a stopped process must not stay a zombie holder
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.proc = None


class RedisFarm:
    """Every Redis process a test started; all killed at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[RedisProc] = []

    def server(self, **kw) -> RedisProc:
        proc = RedisProc(self.workdir, **kw)
        self.procs.append(proc)
        return proc

    def sentinel_group(self, service: str = "polymaster") -> SentinelGroup:
        return SentinelGroup(self, service)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()


class SentinelGroup:
    """A master, one replica and three sentinels with short timers (testing-notes.md)."""

    def __init__(self, farm: RedisFarm, service: str) -> None:
        self.service = service
        # no diskless-sync delay: the replica is online in milliseconds, not 5 s
        self.master = farm.server(extra=["--repl-diskless-sync-delay", "0"])
        self.replica = farm.server(extra=["--replicaof", "127.0.0.1", str(self.master.port),
                                          "--repl-diskless-sync-delay", "0"])
        wait_until(self._replica_online, 10, what="replica online")
        conf = (f"sentinel monitor {service} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {service} 2000\n"
                f"sentinel failover-timeout {service} 10000\n"
                f"sentinel parallel-syncs {service} 1\n")
        self.sentinels = [farm.server(sentinel_conf=conf) for _ in range(3)]
        wait_until(self._sentinels_agree, 15, what="sentinels see each other and the replica")

    def _replica_online(self) -> bool:
        with self.master.client() as c:
            replica = c.info("replication").get("slave0")
            return isinstance(replica, dict) and replica.get("state") == "online"

    def _sentinels_agree(self) -> bool:
        for s in self.sentinels:
            with s.client() as c:
                fields = c.execute_command("SENTINEL", "MASTER", self.service)
                if isinstance(fields, list):  # RESP2 without redis-py's parser: flat pairs
                    fields = dict(zip(fields[::2], fields[1::2], strict=True))
                if int(fields["num-other-sentinels"]) < 2 or int(fields["num-slaves"]) < 1:
                    return False
        return True

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"sentinel://{hosts}/{self.service}/0"

    def master_port(self) -> int:
        with self.sentinels[0].client() as c:
            return int(c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)[1])

    def failover(self) -> float:
        """SENTINEL FAILOVER; return seconds until the sentinels name a new master."""
        before = self.master_port()
        start = time.monotonic()
        with self.sentinels[0].client() as c:
            c.execute_command("SENTINEL", "FAILOVER", self.service)
        wait_until(lambda: self.master_port() != before, 20, what="sentinel failover")
        return time.monotonic() - start


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
