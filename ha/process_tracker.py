"""The one process tracker: every process that a tool or a test starts (the chaos runner,
the Redis launcher, the test fixtures), found again and killed by pid, also on Ctrl-C.

Each child starts in a session of its own, so the terminal's Ctrl-C reaches only
the runner, which then cleans up. Masters start peers and successors in new
sessions, and their process titles replace their command lines, so neither
descendants nor arguments find them all. The tracker finds processes two ways,
neither by command-line text: every pid it has seen is kept with its start time,
so a pid is signalled only while it is still that process (with a run directory,
also written to its ledger `pids.jsonl`, so a fresh tracker on the same directory
finds what an interrupted run left); and every polycorn process of a run carries
the run's tag in its proc name (-n NAME@TAG, its title `polycorn: master
[NAME@TAG]`), which finds the masters no one saw start. Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from polycorn.server import identity, proctitle


def alive(pid: int) -> bool:
    fields = identity.stat_fields(pid)
    return fields is not None and fields[0] != b"Z"


def parent(pid: int) -> int | None:
    fields = identity.stat_fields(pid)
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


def _named(match) -> list[int]:
    found = []
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                name = proctitle.name_of(f.read())
        except OSError:
            continue
        if name is not None and match(name) and alive(pid):
            found.append(pid)
    return found


def named_pids(name: str) -> list[int]:
    """Live polycorn processes of proc name `name` (by title, or by -n before a process
    has set its title)."""
    return _named(lambda n: n == name)


def tagged_pids(tag: str) -> list[int]:
    """Live polycorn processes of a run: their proc names end with @tag."""
    return _named(lambda n: n.endswith(f"@{tag}"))


def signal_pids(pids: Iterable[int], sig: int) -> list[int]:
    """Send sig to each pid; returns those that existed."""
    sent = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            sent.append(pid)
    return sent


def stop_pid(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL if the process outlives `timeout`; True once it is gone.
    A child of ours is reaped by its Popen (or the caller); this only waits for it to die."""
    if not signal_pids([pid], signal.SIGTERM):
        return True
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            signal_pids([pid], signal.SIGKILL)
            deadline = time.monotonic() + 5.0  # SIGKILL cannot be refused: a short wait
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            break
        time.sleep(0.02)
    return not alive(pid)


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid and pid not in out:
        out.add(pid)
        pid = parent(pid) or 0
    return out


class ProcessTracker:
    """Starts children in their own sessions and kills all of them, and theirs, at the end.

    With a run directory it keeps a ledger there and tags the run's polycorn processes;
    without one (a test's own processes) it remembers pids in memory only."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.tag: str | None = None
        self.ledger: Path | None = None
        if run_dir is not None:
            run_dir = run_dir.resolve()
            # The run's tag: derived from its directory, so a fresh tracker finds it again.
            self.tag = hashlib.sha256(str(run_dir).encode()).hexdigest()[:10]
            self.ledger = run_dir / "pids.jsonl"
        self.popens: list[subprocess.Popen] = []
        self.seen: dict[int, int] = {}  # pid -> start time (clock ticks after boot)

    def proc_name(self, label: str) -> str:
        """The -n NAME of a polycorn process of this run."""
        if self.tag is None:
            raise ValueError("a tracker without a run directory tags no process")
        return f"{label}@{self.tag}"

    def spawn(self, argv: list[str], *, log_path: Path, cwd: Path | str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.popens.append(proc)
        self.remember(proc.pid)
        return proc

    def remember(self, *pids: int) -> None:
        """Track processes someone else started (a child's children, a peer master)."""
        self._remember(pids)

    def _remember(self, pids: Iterable[int]) -> None:
        new = []
        for pid in pids:
            start = identity.start_time(pid)
            if pid not in self.seen and start is not None:
                self.seen[pid] = start
                new.append({"pid": pid, "start": start})
        if new and self.ledger is not None:
            with contextlib.suppress(OSError), open(self.ledger, "a") as f:
                f.write("".join(json.dumps(rec) + "\n" for rec in new))

    def _read_ledger(self) -> None:
        if self.ledger is None:
            return
        try:
            lines = self.ledger.read_text().splitlines()
        except OSError:
            return
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                rec = json.loads(line)
                self.seen.setdefault(int(rec["pid"]), int(rec["start"]))

    def __contains__(self, pid: int) -> bool:
        return pid in self.seen

    def live(self) -> set[int]:
        """Pids seen that are still the very process seen (not a later one with its pid)."""
        return {p for p, start in self.seen.items() if identity.start_time(p) == start}

    def sweep(self) -> set[int]:
        """Remember every live process of this run (call it now and then: orphans of a
        killed master are re-parented and only their tag finds them later)."""
        self._read_ledger()
        mine = _ancestors()
        tagged = set(tagged_pids(self.tag)) if self.tag else set()
        roots = (self.live() | tagged) - mine
        self._remember([*roots, *descendants(*roots)])
        return self.live() - mine

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
