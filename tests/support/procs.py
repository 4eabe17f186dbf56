"""Start real polycorn processes on free loopback ports and clean them up by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from polycorn.server import identity, proctitle

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """Direct children of pid, read from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may contain spaces and parentheses: split after the last ')'
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry))
    return out


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except OSError:
        return False


def pids_named(name: str) -> list[int]:
    """Every live polycorn process of proc name `name` (-n): masters, workers, agents,
    found by their title `polycorn: ROLE [NAME]`, or by `-n NAME` before they set one."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if proctitle.is_named(cmdline, name) and alive(int(entry)):
            found.append(int(entry))
    return found


def unique_name() -> str:
    """A proc name (-n) no other test uses: it finds this test's processes again."""
    return f"test-{uuid.uuid4().hex[:12]}"


def kill_all(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class Seen:
    """Pids remembered with their start times: a pid is signalled later only while it
    is still the process we saw (never one that got the number after it exited)."""

    def __init__(self) -> None:
        self.starts: dict[int, int] = {}

    def add(self, *pids: int) -> None:
        for pid in pids:
            start = identity.start_time(pid)
            if start is not None:
                self.starts.setdefault(pid, start)

    def live(self) -> list[int]:
        return [p for p, start in self.starts.items() if identity.start_time(p) == start]

    def __contains__(self, pid: int) -> bool:
        return pid in self.starts


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def name_in(args: list[str]) -> str | None:
    """The -n/--name a command line gives, if any."""
    for i, arg in enumerate(args):
        if arg in ("-n", "--name") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--name="):
            return arg.split("=", 1)[1]
    return None


class Polycorn:
    """A polycorn master started as a real process; every pid it spawned is killed on stop.

    Each gets a proc name of its own (-n, unless the test gives one or asks for none
    with auto_name=False): peers and new generations live in sessions of their own and
    their titles replace their command lines, so the name is what finds them all again.
    """

    def __init__(self, args: list[str], *, cwd: Path | str = EXAMPLES, env: dict | None = None,
                 log_path: Path | None = None, auto_name: bool = True,
                 command: list[str] | None = None) -> None:
        self.name = name_in(args) or (unique_name() if auto_name else None)
        if name_in(args) is None and self.name is not None:
            args = ["-n", self.name, *args]
        self.args = args
        self.log_path = log_path
        full_env = dict(os.environ)
        full_env.pop("POLYCORN_CMD_ARGS", None)
        full_env.update(env or {})
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
        # `command`: another way to start it (the installed console script, for the README).
        self.proc = subprocess.Popen(
            [*(command or [sys.executable, "-m", "polycorn.server.main"]), *args],
            cwd=cwd, env=full_env, stdout=self._log, stderr=self._log,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.seen = Seen()
        self.seen.add(self.pid)

    def track(self) -> list[int]:
        """Remember every descendant now alive, so stop() can kill it even if orphaned."""
        now = descendants(self.pid)
        self.seen.add(*now)
        return now

    def workers(self) -> list[int]:
        self.track()
        return [p for p in children(self.pid) if alive(p)]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def wait_port(self, port: int, timeout: float = 15.0) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"polycorn exited with {self.proc.returncode}:\n{self.log()}")
            return port_open(port)
        wait_until(ready, timeout, what=f"port {port}")
        self.track()

    def signal(self, sig: int) -> None:
        self.track()
        os.kill(self.pid, sig)

    def stop(self) -> None:
        self.track()
        # Masters started by other masters (peers, upgrades) live in sessions of
        # their own, and outlive the master that started them: find them by name.
        for pid in pids_named(self.name) if self.name else ():
            self.seen.add(pid, *descendants(pid))
        kill_all(self.seen.live(), signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
