"""Every process the chaos runner starts, found again and killed by pid, also on Ctrl-C.

Each child starts in a session of its own, so the terminal's Ctrl-C reaches only
the runner, which then cleans up. Masters start peers and successors in new
sessions, so descendants alone would miss some: the tracker also finds processes
by the run directory appearing in their arguments (unique to this run), read from
/proc, and kills each by pid, never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # the command name may hold spaces and parentheses: split after the last ')'
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != b"Z"


def parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def _all_pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def children(pid: int) -> list[int]:
    return [p for p in _all_pids() if parent(p) == pid]


def descendants(*pids: int) -> list[int]:
    """Every live descendant of the given pids (one pass over /proc)."""
    by_parent: dict[int, list[int]] = {}
    for p in _all_pids():
        ppid = parent(p)
        if ppid is not None:
            by_parent.setdefault(ppid, []).append(p)
    found, todo = [], list(pids)
    while todo:
        for child in by_parent.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def pids_mentioning(text: str, exclude: Iterable[int] = ()) -> list[int]:
    """Live processes with `text` inside one of their arguments."""
    skip = set(exclude)
    return [p for p in _all_pids()
            if p not in skip and alive(p) and any(text in arg for arg in cmdline(p))]


def signal_pids(pids: Iterable[int], sig: int) -> list[int]:
    """Send sig to each pid; returns those that existed."""
    sent = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            sent.append(pid)
    return sent


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid and pid not in out:
        out.add(pid)
        pid = parent(pid) or 0
    return out


class ProcessTracker:
    """Starts children in their own sessions and kills all of them, and theirs, at the end."""

    def __init__(self, run_dir: Path) -> None:
        # The trailing separator keeps /x/run from matching /x/run2.
        self.marker = str(run_dir.resolve()) + os.sep
        self.popens: list[subprocess.Popen] = []
        self.seen: set[int] = set()

    def spawn(self, argv: list[str], *, log_path: Path, cwd: Path | str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.popens.append(proc)
        self.seen.add(proc.pid)
        return proc

    def sweep(self) -> set[int]:
        """Remember every live process of this run (call it now and then: orphans of a
        killed master are re-parented and only the marker finds them later)."""
        mine = _ancestors()
        found = set(pids_mentioning(self.marker, exclude=mine))
        found.update(descendants(*self.seen, *found))
        found -= mine
        self.seen |= found
        return {p for p in self.seen if alive(p)}

    def kill_all(self, wait: float = 5.0) -> None:
        """SIGKILL every process of this run (SIGCONT first: a stopped one must not linger
        holding a port), reap our direct children, and repeat until none is left."""
        deadline = time.monotonic() + wait
        while True:
            live = self.sweep()
            for proc in self.popens:  # each child leads its own group: take the group too
                if proc.returncode is None:  # not reaped: its pid is still its group's id
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
            signal_pids(live, signal.SIGCONT)
            signal_pids(live, signal.SIGKILL)
            for proc in self.popens:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.5)
            if not self.sweep() or time.monotonic() > deadline:
                return
            time.sleep(0.05)
