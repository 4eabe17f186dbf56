"""Start real polycorn processes on free loopback ports and clean them up by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

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


def pids_with_arg(text: str) -> list[int]:
    """Every live process whose command line contains `text` as one argument."""
    found = []
    needle = text.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if needle in args and alive(int(entry)):
            found.append(int(entry))
    return found


def kill_all(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


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


class Polycorn:
    """A polycorn master started as a real process; every pid it spawned is killed on stop."""

    def __init__(self, args: list[str], *, cwd: Path | str = EXAMPLES, env: dict | None = None,
                 log_path: Path | None = None) -> None:
        self.args = args
        self.log_path = log_path
        full_env = dict(os.environ)
        full_env.pop("POLYCORN_CMD_ARGS", None)
        full_env.update(env or {})
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "polycorn.server.main", *args],
            cwd=cwd, env=full_env, stdout=self._log, stderr=self._log,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.seen: set[int] = {self.pid}

    def track(self) -> list[int]:
        """Remember every descendant now alive, so stop() can kill it even if orphaned."""
        now = descendants(self.pid)
        self.seen.update(now)
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
        # Masters started by other masters (peers, upgrades) live in their own
        # sessions: find them by our unique command line too.
        for arg in self.args:
            if arg.startswith(("127.0.0.1:", "unix:")) or arg.endswith((".sock", ".pid")):
                for pid in pids_with_arg(arg):
                    self.seen.update([pid, *descendants(pid)])
        kill_all(self.seen, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
