"""Every process the chaos runner starts, found again and killed by pid, also on Ctrl-C.

Each child starts in a session of its own, so the terminal's Ctrl-C reaches only
the runner, which then cleans up. Masters start peers and successors in new
sessions, and their process titles replace their command lines, so neither
descendants nor arguments find them all. The tracker finds processes two ways,
neither by command-line text: every pid it has seen is written with its start
time to the run directory's ledger (`pids.jsonl`), so a pid is signalled only
while it is still that process, and a fresh tracker on the same run directory
finds what an interrupted run left; and every polycorn process of the run carries
the run's tag in its proc name (-n NAME@TAG, its title `polycorn: master
[NAME@TAG]`), which finds the masters no one saw start.
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


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid and pid not in out:
        out.add(pid)
        pid = parent(pid) or 0
    return out


class ProcessTracker:
    """Starts children in their own sessions and kills all of them, and theirs, at the end."""

    def __init__(self, run_dir: Path) -> None:
        run_dir = run_dir.resolve()
        # The run's tag: derived from its directory, so a fresh tracker finds it again.
        self.tag = hashlib.sha256(str(run_dir).encode()).hexdigest()[:10]
        self.ledger = run_dir / "pids.jsonl"
        self.popens: list[subprocess.Popen] = []
        self.seen: dict[int, int] = {}  # pid -> start time (clock ticks after boot)

    def proc_name(self, label: str) -> str:
        """The -n NAME of a polycorn process of this run."""
        return f"{label}@{self.tag}"

    def spawn(self, argv: list[str], *, log_path: Path, cwd: Path | str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.popens.append(proc)
        self._remember([proc.pid])
        return proc

    def _remember(self, pids: Iterable[int]) -> None:
        new = []
        for pid in pids:
            start = identity.start_time(pid)
            if pid not in self.seen and start is not None:
                self.seen[pid] = start
                new.append({"pid": pid, "start": start})
        if new:
            with contextlib.suppress(OSError), open(self.ledger, "a") as f:
                f.write("".join(json.dumps(rec) + "\n" for rec in new))

    def _read_ledger(self) -> None:
        try:
            lines = self.ledger.read_text().splitlines()
        except OSError:
            return
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                rec = json.loads(line)
                self.seen.setdefault(int(rec["pid"]), int(rec["start"]))

    def live(self) -> set[int]:
        """Pids seen that are still the very process seen (not a later one with its pid)."""
        return {p for p, start in self.seen.items() if identity.start_time(p) == start}

    def sweep(self) -> set[int]:
        """Remember every live process of this run (call it now and then: orphans of a
        killed master are re-parented and only their tag finds them later)."""
        self._read_ledger()
        mine = _ancestors()
        roots = (self.live() | set(tagged_pids(self.tag))) - mine
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
