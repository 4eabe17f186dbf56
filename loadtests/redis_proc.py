"""The chaos runner's own Redis: one redis-server, or a Sentinel group, on loopback.

Runs the `redis-server` on PATH in the foreground under the process tracker (so
Ctrl-C cleans it up), with its data in the run directory and the append-only
file on, so a restart after a crash keeps the cluster's epochs. The Sentinel
group (a master, a replica, three sentinels) uses short timers: a failover then
takes seconds, not the shipped defaults' minutes. Commands go over a plain RESP2
socket: the runner needs no Redis client library.
"""

from __future__ import annotations

import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

from loadtests.procs import ProcessTracker, alive, signal_pids

SERVICE = "polycorn"
START_TIMEOUT = 10.0
INSTALL_HINT = ("redis-server not found on PATH (Debian/Ubuntu: apt-get install redis-server; "
                "or `make deps`)")


class RedisError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _encode(args: tuple[str, ...]) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_reply(f) -> Any:
    """One RESP2 reply: str, int, None, or a list of those; an error reply raises."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise RedisError("connection closed mid-reply")
    kind, text = line[:1], line[1:-2].decode(errors="replace")
    if kind == b"+":
        return text
    if kind == b"-":
        raise RedisError(text)
    if kind == b":":
        return int(text)
    if kind == b"$":
        size = int(text)
        return None if size < 0 else f.read(size + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        count = int(text)
        return None if count < 0 else [_read_reply(f) for _ in range(count)]
    raise RedisError(f"unexpected reply {line[:40]!r}")


def command(port: int, *args: str, timeout: float = 1.0) -> Any:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(_encode(args))
        with s.makefile("rb") as f:
            return _read_reply(f)


def pingable(port: int) -> bool:
    try:
        return command(port, "PING", timeout=0.5) == "PONG"
    except (OSError, RedisError):
        return False


class RedisServer:
    """One redis-server process that can be crashed and started again on its port."""

    def __init__(self, tracker: ProcessTracker, directory: Path, *, port: int | None = None,
                 extra: list[str] | None = None, sentinel_conf: str | None = None) -> None:
        self.tracker = tracker
        self.port = port or free_port()
        self.dir = directory / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra = extra or []
        self.sentinel_conf = sentinel_conf
        self.pid = 0

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisError(INSTALL_HINT)
        if self.sentinel_conf is not None:
            conf = self.dir / "sentinel.conf"
            if not conf.exists():  # a sentinel rewrites its file: keep what it learned
                conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                                + self.sentinel_conf)
            argv = [binary, str(conf), "--sentinel"]
        else:
            argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                    str(self.dir), "--save", "", "--appendonly", "yes",
                    "--appendfsync", "everysec", *self.extra]
        self.pid = self.tracker.spawn(argv, log_path=self.dir / "server.log").pid
        deadline = time.monotonic() + START_TIMEOUT
        while not pingable(self.port):
            if not alive(self.pid) or time.monotonic() > deadline:
                raise RedisError(f"redis-server on port {self.port} did not start; "
                                 f"see {self.dir / 'server.log'}")
            time.sleep(0.05)

    def crash(self) -> None:
        """SIGKILL (after SIGCONT: a stopped server must die too)."""
        signal_pids([self.pid], signal.SIGCONT)
        signal_pids([self.pid], signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)


class RedisSetup:
    """What the cluster uses: a URL, and the servers behind it."""

    def __init__(self, tracker: ProcessTracker, directory: Path, mode: str) -> None:
        self.mode = mode  # "single" or "sentinel"
        self.servers: list[RedisServer] = []
        self.sentinels: list[RedisServer] = []
        self.tracker = tracker
        self.directory = directory

    def start(self) -> None:
        primary = RedisServer(self.tracker, self.directory)
        primary.start()
        self.servers.append(primary)
        if self.mode != "sentinel":
            return
        replica = RedisServer(self.tracker, self.directory,
                              extra=["--replicaof", "127.0.0.1", str(primary.port)])
        replica.start()
        self.servers.append(replica)
        conf = (f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 2000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n")
        for _ in range(3):
            sentinel = RedisServer(self.tracker, self.directory, sentinel_conf=conf)
            sentinel.start()
            self.sentinels.append(sentinel)
        self._wait_sentinels()

    def _wait_sentinels(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if all(self._sentinel_sees_all(s.port) for s in self.sentinels):
                    return
            except (OSError, RedisError):
                pass
            time.sleep(0.2)
        raise RedisError("the sentinels did not find each other and the replica in 20s")

    @staticmethod
    def _sentinel_sees_all(port: int) -> bool:
        flat = command(port, "SENTINEL", "MASTER", SERVICE)
        values = dict(zip(flat[::2], flat[1::2], strict=True))
        return (int(values.get("num-other-sentinels", 0)) >= 2
                and int(values.get("num-slaves", 0)) >= 1)

    @property
    def url(self) -> str:
        if self.mode == "sentinel":
            hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
            return f"sentinel://{hosts}/{SERVICE}/0"
        return f"redis://127.0.0.1:{self.servers[0].port}/0"

    def current_primary(self) -> RedisServer:
        if self.mode != "sentinel":
            return self.servers[0]
        _host, port_text = command(self.sentinels[0].port, "SENTINEL",
                                   "GET-MASTER-ADDR-BY-NAME", SERVICE)
        port = int(port_text)
        for server in self.servers:
            if server.port == port:
                return server
        raise RedisError(f"the sentinels name an unknown master port {port}")

    def failover(self) -> str:
        before = self.current_primary().port
        command(self.sentinels[0].port, "SENTINEL", "FAILOVER", SERVICE)
        return f"SENTINEL FAILOVER {SERVICE} (master was port {before})"
