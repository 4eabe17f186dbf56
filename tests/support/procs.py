"""Start real polycorn processes on free loopback ports and clean them up by pid.

The /proc helpers and the pid bookkeeping are the project's one process tracker
(polycorn.ha.process_tracker), re-exported here under the names the tests use.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from polycorn.ha.process_tracker import (
    ProcessTracker,
    alive,
    children,
    descendants,
    named_pids,
    signal_pids,
)
from polycorn.server import identity
from polycorn.server.upgrade_command import status_files

__all__ = ["EXAMPLES", "ROOT", "Polycorn", "alive", "children", "descendants", "free_port",
           "kill_all", "live_masters", "name_in", "named_pids", "port_open", "sigint_by_default", "switch_release",
           "unique_name", "wait_until"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sigint_by_default() -> None:
    """A child's preexec_fn for a test that sends it SIGINT as a terminal's Ctrl-C would.

    A process started in the background by a shell without job control (`make test &`
    in a script, nohup, some CI launchers) inherits SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler: the test's Ctrl-C would reach a runner that
    cannot hear it (both Ctrl-C tests hung for their whole timeout that way)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def unique_name() -> str:
    """A proc name (-n) no other test uses: it finds this test's processes again."""
    return f"test-{uuid.uuid4().hex[:12]}"


def kill_all(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    signal_pids(pids, sig)


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
        # Every pid it spawned, with its start time: killed later only while still that process.
        self.seen = ProcessTracker()
        self.seen.remember(self.pid)

    def track(self) -> list[int]:
        """Remember every descendant now alive, so stop() can kill it even if orphaned."""
        now = descendants(self.pid)
        self.seen.remember(*now)
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
        for pid in named_pids(self.name) if self.name else ():
            self.seen.remember(pid, *descendants(pid))
        kill_all(self.seen.live(), signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self._log is not subprocess.DEVNULL:
            self._log.close()


def live_masters(pid_path: str | Path) -> dict[int, int]:
    """index -> pid of each live master, from the status files (their stamps verified)."""
    out = {}
    for path in status_files(str(pid_path)):  # exact names: never a half-written .tmp
        try:
            record = json.loads(Path(path).read_text())
        except (ValueError, FileNotFoundError):
            continue
        if identity.verified_pid(record):  # never a process that took a dead master's pid
            out[record["index"]] = record["pid"]
    return out


def switch_release(base: Path, rel: Path) -> None:
    """Capistrano's atomic switch: a new symlink renamed over `current`."""
    tmp = base / "current.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(rel)
    os.replace(tmp, base / "current")
